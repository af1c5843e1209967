"""login attempts: shared throttling of admin logins

Revision ID: 0002_login_attempts
Revises: 0001_foundation
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_login_attempts'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_login_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('bucket', sa.String(length=10), nullable=False),
    sa.Column('subject', sa.String(length=64), nullable=False),
    sa.Column('attempted_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_login_attempts'))
    )
    with op.batch_alter_table('mls_login_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_login_attempts_attempted_at'), ['attempted_at'], unique=False)
        batch_op.create_index('ix_mls_login_attempts_subject', ['bucket', 'subject', 'attempted_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mls_login_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_login_attempts_subject')
        batch_op.drop_index(batch_op.f('ix_mls_login_attempts_attempted_at'))

    op.drop_table('mls_login_attempts')
