"""grants: unknown outcomes settle before a second order; late duplicates are watched for

Revision ID: 0008_unknown_outcomes
Revises: 0007_webhooks
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_unknown_outcomes'
down_revision = '0007_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mls_grants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_ordered_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('settle_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('verify_until', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('orders_sent', sa.Integer(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_mls_grants_verify_until'), ['verify_until'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mls_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mls_grants_verify_until'))
        batch_op.drop_column('orders_sent')
        batch_op.drop_column('verify_until')
        batch_op.drop_column('settle_until')
        batch_op.drop_column('first_ordered_at')
