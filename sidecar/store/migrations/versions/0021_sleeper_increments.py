"""sleeper increments: a change scan keeps the read model fresh between reconciling rebuilds

Revision ID: 0021_sleeper_increments
Revises: 0018_dashboard_snapshots
Create Date: 2026-12-07

``mls_sleeper_scan``: the digests of the site per bucket of user ids, the UTC day the model holds, and
what the last scan and the last reconciling rebuild found. ``mls_sleeper_hints``: users a MemberLux
webhook named, evaluated again by the next scan. ``mls_sleeper_refreshes.checked_at``: when a level was
last known current (its rebuild, or a later scan).
"""
from alembic import op
import sqlalchemy as sa


revision = '0021_sleeper_increments'
down_revision = '0018_dashboard_snapshots'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mls_sleeper_scan',
        sa.Column('name', sa.String(length=40), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('shape', sa.String(length=64), nullable=False),
        sa.Column('digests', sa.JSON(), nullable=False),
        sa.Column('scanned_at', sa.DateTime(), nullable=False),
        sa.Column('scan_seconds', sa.Float(), nullable=False),
        sa.Column('last_changes', sa.JSON(), nullable=False),
        sa.Column('rebuilt_at', sa.DateTime(), nullable=False),
        sa.Column('rebuild_seconds', sa.Float(), nullable=False),
        sa.Column('reconciled_at', sa.DateTime(), nullable=True),
        sa.Column('missed', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_mls_sleeper_scan')),
    )
    op.create_table(
        'mls_sleeper_hints',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('user_id', sa.BigInteger(), nullable=False),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_sleeper_hints')),
    )
    with op.batch_alter_table('mls_sleeper_refreshes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('mls_sleeper_refreshes', schema=None) as batch_op:
        batch_op.drop_column('checked_at')
    op.drop_table('mls_sleeper_hints')
    op.drop_table('mls_sleeper_scan')
