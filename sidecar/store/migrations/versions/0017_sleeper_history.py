"""sleeper counts: a day's count may be reconstructed from key dates instead of counted by a refresh

Revision ID: 0017_sleeper_history
Revises: 0015_shadow_grants
Create Date: 2026-12-07

``mls_sleeper_counts.reconstructed``: true for a day filled in by the trend backfill (the sleeper rule
applied to the keys and certificates that existed on that day), false for a day a refresh counted. Rows
already stored were counted by refreshes.
"""
from alembic import op
import sqlalchemy as sa


revision = '0017_sleeper_history'
down_revision = '0015_shadow_grants'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mls_sleeper_counts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reconstructed', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    # Reconstructed days mean nothing to the earlier code: they would pass for counted ones.
    op.execute("DELETE FROM mls_sleeper_counts WHERE reconstructed")
    with op.batch_alter_table('mls_sleeper_counts', schema=None) as batch_op:
        batch_op.drop_column('reconstructed')
