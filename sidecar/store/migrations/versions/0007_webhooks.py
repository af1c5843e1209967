"""webhooks: endpoints, events, deliveries, attempts, inbound hints

Revision ID: 0007_webhooks
Revises: 0006_programs
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_webhooks'
down_revision = '0006_programs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_inbound_hints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=60), nullable=False),
    sa.Column('email', sa.String(length=200), nullable=False),
    sa.Column('term_id', sa.BigInteger(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('processed_at', sa.DateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=300), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_inbound_hints')),
    sa.UniqueConstraint('content_hash', name=op.f('uq_mls_inbound_hints_content_hash'))
    )
    with op.batch_alter_table('mls_inbound_hints', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_inbound_hints_processed_at'), ['processed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_mls_inbound_hints_received_at'), ['received_at'], unique=False)

    op.create_table('mls_webhook_endpoints',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('url', sa.String(length=500), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('body_format', sa.String(length=20), nullable=False),
    sa.Column('program_id', sa.BigInteger(), nullable=True),
    sa.Column('secret', sa.String(length=200), nullable=False),
    sa.Column('previous_secret', sa.String(length=200), nullable=False),
    sa.Column('previous_secret_until', sa.DateTime(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('description', sa.String(length=300), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('disabled_reason', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_webhook_endpoints')),
    sa.UniqueConstraint('name', name=op.f('uq_mls_webhook_endpoints_name'))
    )
    op.create_table('mls_webhook_events',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('program_id', sa.BigInteger(), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_webhook_events'))
    )
    with op.batch_alter_table('mls_webhook_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_webhook_events_created_at'), ['created_at'], unique=False)

    op.create_table('mls_webhook_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('endpoint_id', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('last_status', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['endpoint_id'], ['mls_webhook_endpoints.id'], name=op.f('fk_mls_webhook_deliveries_endpoint_id_mls_webhook_endpoints')),
    sa.ForeignKeyConstraint(['event_id'], ['mls_webhook_events.id'], name=op.f('fk_mls_webhook_deliveries_event_id_mls_webhook_events')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_webhook_deliveries')),
    sa.UniqueConstraint('event_id', 'endpoint_id', name='uq_mls_webhook_deliveries_event_endpoint')
    )
    with op.batch_alter_table('mls_webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_mls_webhook_deliveries_endpoint', ['endpoint_id', 'id'], unique=False)
        batch_op.create_index('ix_mls_webhook_deliveries_work', ['state', 'next_attempt_at'], unique=False)

    op.create_table('mls_webhook_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('delivery_id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('response_excerpt', sa.String(length=1000), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['mls_webhook_deliveries.id'], name=op.f('fk_mls_webhook_attempts_delivery_id_mls_webhook_deliveries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_webhook_attempts'))
    )
    with op.batch_alter_table('mls_webhook_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_webhook_attempts_delivery_id'), ['delivery_id'], unique=False)



def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key still uses.
    op.drop_table('mls_webhook_attempts')
    op.drop_table('mls_webhook_deliveries')
    op.drop_table('mls_webhook_events')
    op.drop_table('mls_webhook_endpoints')
    op.drop_table('mls_inbound_hints')
