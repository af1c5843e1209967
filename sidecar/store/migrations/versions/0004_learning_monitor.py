"""learning monitor: certificate classes, sleepers read model

Revision ID: 0004_learning_monitor
Revises: 0003_grant_bridge
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_learning_monitor'
down_revision = '0003_grant_bridge'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_certificate_classes',
    sa.Column('certificate_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('level_id', sa.BigInteger(), nullable=False),
    sa.Column('cls', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('date_issue', sa.Date(), nullable=True),
    sa.Column('create_date', sa.Date(), nullable=True),
    sa.Column('responsible_person', sa.BigInteger(), nullable=True),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(), nullable=False),
    sa.Column('checked_at', sa.DateTime(), nullable=False),
    sa.Column('deleted_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('certificate_id', name=op.f('pk_mls_certificate_classes'))
    )
    with op.batch_alter_table('mls_certificate_classes', schema=None) as batch_op:
        batch_op.create_index('ix_mls_certificate_classes_level_user', ['level_id', 'user_id'], unique=False)

    op.create_table('mls_sleeper_counts',
    sa.Column('term_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('sleepers', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('term_id', 'day', name=op.f('pk_mls_sleeper_counts'))
    )
    op.create_table('mls_sleeper_refreshes',
    sa.Column('term_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('evaluated_for', sa.Date(), nullable=False),
    sa.Column('refreshed_at', sa.DateTime(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('rows_scanned', sa.Integer(), nullable=False),
    sa.Column('users_considered', sa.Integer(), nullable=False),
    sa.Column('sleepers', sa.Integer(), nullable=False),
    sa.Column('reasons', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('term_id', name=op.f('pk_mls_sleeper_refreshes'))
    )
    op.create_table('mls_sleepers',
    sa.Column('term_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('expired_on', sa.Date(), nullable=False),
    sa.Column('last_grant', sa.Date(), nullable=True),
    sa.Column('blocked', sa.Boolean(), nullable=False),
    sa.Column('email', sa.String(length=100), nullable=False),
    sa.Column('login', sa.String(length=60), nullable=False),
    sa.Column('first_name', sa.String(length=100), nullable=False),
    sa.Column('last_name', sa.String(length=100), nullable=False),
    sa.Column('search_text', sa.String(length=400), nullable=False),
    sa.Column('refreshed_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('term_id', 'user_id', name=op.f('pk_mls_sleepers'))
    )
    with op.batch_alter_table('mls_sleepers', schema=None) as batch_op:
        batch_op.create_index('ix_mls_sleepers_email', ['term_id', 'email', 'user_id'], unique=False)
        batch_op.create_index('ix_mls_sleepers_expiry', ['term_id', 'expired_on', 'user_id'], unique=False)
        batch_op.create_index('ix_mls_sleepers_expiry_all', ['expired_on', 'term_id', 'user_id'], unique=False)
        batch_op.create_index('ix_mls_sleepers_last_name', ['term_id', 'last_name', 'user_id'], unique=False)

    op.create_table('mls_watch_state',
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_mls_watch_state'))
    )


def downgrade() -> None:
    op.drop_table('mls_watch_state')
    with op.batch_alter_table('mls_sleepers', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_sleepers_last_name')
        batch_op.drop_index('ix_mls_sleepers_expiry_all')
        batch_op.drop_index('ix_mls_sleepers_expiry')
        batch_op.drop_index('ix_mls_sleepers_email')

    op.drop_table('mls_sleepers')
    op.drop_table('mls_sleeper_refreshes')
    op.drop_table('mls_sleeper_counts')
    with op.batch_alter_table('mls_certificate_classes', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_certificate_classes_level_user')

    op.drop_table('mls_certificate_classes')
