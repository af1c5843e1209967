"""bridge shadow mode: the outcome of a grant that was only watched

Revision ID: 0015_shadow_grants
Revises: 0014_reminder_approvals
Create Date: 2026-12-07

``mls_grants.shadow_outcome`` (indexed): ``matched``, ``legacy_missing``, ``legacy_different`` or
``legacy_extra`` for a grant accepted in shadow mode once its watch is over (status ``shadowed``); NULL
for every other grant. The evidence lives in the grant's ``meta`` and its audit trail.
"""
from alembic import op
import sqlalchemy as sa


revision = '0015_shadow_grants'
down_revision = '0014_reminder_approvals'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: a batch (table copy) on SQLite would drop mls_grants, and with it, by cascade, the
    # attempts and welcome letters that reference it.
    op.add_column('mls_grants', sa.Column('shadow_outcome', sa.String(length=20), nullable=True))
    op.create_index(op.f('ix_mls_grants_shadow_outcome'), 'mls_grants', ['shadow_outcome'], unique=False)


def downgrade() -> None:
    # Shadow grants mean nothing to the earlier code (it would order them): they go first.
    op.execute("DELETE FROM mls_grants WHERE status IN ('shadow', 'shadowed')")
    op.drop_index(op.f('ix_mls_grants_shadow_outcome'), table_name='mls_grants')
    with op.batch_alter_table('mls_grants', schema=None) as batch_op:
        batch_op.drop_column('shadow_outcome')
