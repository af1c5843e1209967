"""grant bridge: grants, attempts, seen signatures

Revision ID: 0003_grant_bridge
Revises: 0002_login_attempts
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0003_grant_bridge'
down_revision = '0002_login_attempts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_grants',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('source_label', sa.String(length=100), nullable=True),
    sa.Column('principal', sa.String(length=120), nullable=False),
    sa.Column('external_id', sa.String(length=190), nullable=True),
    sa.Column('amo_lead_id', sa.BigInteger(), nullable=True),
    sa.Column('email', sa.String(length=100), nullable=True),
    sa.Column('first_name', sa.String(length=100), nullable=True),
    sa.Column('last_name', sa.String(length=100), nullable=True),
    sa.Column('patronymic', sa.String(length=100), nullable=True),
    sa.Column('phone', sa.String(length=40), nullable=True),
    sa.Column('term_id', sa.BigInteger(), nullable=True),
    sa.Column('duration', sa.Integer(), nullable=True),
    sa.Column('units', sa.String(length=10), nullable=True),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('outcome_unknown', sa.Boolean(), nullable=False),
    sa.Column('claimed_by', sa.String(length=120), nullable=True),
    sa.Column('claim_expires_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=True),
    sa.Column('order_id', sa.BigInteger(), nullable=True),
    sa.Column('user_id', sa.BigInteger(), nullable=True),
    sa.Column('user_existed', sa.Boolean(), nullable=True),
    sa.Column('key_id', sa.BigInteger(), nullable=True),
    sa.Column('date_start', sa.Date(), nullable=True),
    sa.Column('date_end', sa.Date(), nullable=True),
    sa.Column('is_unlimited', sa.Boolean(), nullable=False),
    sa.Column('source_ip', sa.String(length=45), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_grants')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_mls_grants_idempotency_key'))
    )
    with op.batch_alter_table('mls_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_grants_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_mls_grants_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_mls_grants_external_id'), ['external_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_mls_grants_next_attempt_at'), ['next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_mls_grants_status'), ['status'], unique=False)

    op.create_table('mls_seen_signatures',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('seen_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_mls_seen_signatures'))
    )
    with op.batch_alter_table('mls_seen_signatures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_seen_signatures_expires_at'), ['expires_at'], unique=False)

    op.create_table('mls_grant_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('detail', sa.String(length=1000), nullable=True),
    sa.Column('elapsed_ms', sa.Integer(), nullable=True),
    sa.Column('worker', sa.String(length=120), nullable=True),
    sa.ForeignKeyConstraint(['grant_id'], ['mls_grants.id'], name=op.f('fk_mls_grant_attempts_grant_id_mls_grants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_grant_attempts'))
    )
    with op.batch_alter_table('mls_grant_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_grant_attempts_grant_id'), ['grant_id'], unique=False)



def downgrade() -> None:
    # Dropping the tables drops their indexes; MySQL refuses to drop an index a foreign key needs first.
    op.drop_table('mls_grant_attempts')
    op.drop_table('mls_seen_signatures')
    op.drop_table('mls_grants')
