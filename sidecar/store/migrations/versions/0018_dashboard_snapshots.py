"""dashboard snapshots: the worker computes "what happened after each letter", the page reads it

Revision ID: 0018_dashboard_snapshots
Revises: 0017_sleeper_history
Create Date: 2026-12-07

``mls_dashboard_snapshots``: one row per outcome window, written by the ``dashboard.after_letters`` job.
``ix_mls_reminders_sent``: the page's letter counts per level and step read from an index, not the ledger.
"""
from alembic import op
import sqlalchemy as sa


revision = '0018_dashboard_snapshots'
down_revision = '0017_sleeper_history'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mls_dashboard_snapshots',
        sa.Column('window_days', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('computed_for', sa.Date(), nullable=False),
        sa.Column('first_day', sa.Date(), nullable=False),
        sa.Column('last_day', sa.Date(), nullable=False),
        sa.Column('computed_at', sa.DateTime(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('figures', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('window_days', name=op.f('pk_mls_dashboard_snapshots')),
    )
    with op.batch_alter_table('mls_reminders', schema=None) as batch_op:
        batch_op.create_index('ix_mls_reminders_sent', ['state', 'term_id', 'step', 'sent_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mls_reminders', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_reminders_sent')
    op.drop_table('mls_dashboard_snapshots')
