"""access events: activations and expiries announced once; endpoint body templates

Revision ID: 0012_access_events
Revises: 0011_grant_keys_per_credential
Create Date: 2026-12-07

``mls_access_activations`` (one row per key activation announced, or found already there when the key
scan started) and ``mls_access_expiries`` (one row per level, learner and end of access announced) make
``access.activated`` and ``access.expired`` once-only across restarts and workers.
``mls_webhook_endpoints.body_template`` holds an endpoint's JSON body template ('' = the standard body);
it is added nullable, filled, then made NOT NULL, since MySQL gives TEXT columns no default.
"""
from alembic import op
import sqlalchemy as sa


revision = '0012_access_events'
down_revision = '0011_grant_keys_per_credential'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_access_activations',
    sa.Column('key_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('term_id', sa.BigInteger(), nullable=False),
    sa.Column('found_by', sa.String(length=80), nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=True),
    sa.Column('seen_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_mls_access_activations'))
    )
    op.create_table('mls_access_expiries',
    sa.Column('term_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('expired_on', sa.Date(), nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=True),
    sa.Column('recorded_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('term_id', 'user_id', 'expired_on', name=op.f('pk_mls_access_expiries'))
    )
    with op.batch_alter_table('mls_webhook_endpoints', schema=None) as batch_op:
        batch_op.add_column(sa.Column('body_template', sa.Text(), nullable=True))
    op.execute("UPDATE mls_webhook_endpoints SET body_template = ''")
    with op.batch_alter_table('mls_webhook_endpoints', schema=None) as batch_op:
        batch_op.alter_column('body_template', existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('mls_webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('body_template')
    op.drop_table('mls_access_expiries')
    op.drop_table('mls_access_activations')
