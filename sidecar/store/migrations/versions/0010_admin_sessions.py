"""admin sessions: server-side record of every sign-in, so that a logout ends copied cookies too

Revision ID: 0010_admin_sessions
Revises: 0009_mail_unknown_outcomes
Create Date: 2026-12-06
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_admin_sessions'
down_revision = '0009_mail_unknown_outcomes'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_admin_sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('password_fingerprint', sa.String(length=64), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('end_reason', sa.String(length=20), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_admin_sessions'))
    )
    with op.batch_alter_table('mls_admin_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_admin_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_mls_admin_sessions_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mls_admin_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_mls_admin_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_mls_admin_sessions_expires_at'))

    op.drop_table('mls_admin_sessions')
