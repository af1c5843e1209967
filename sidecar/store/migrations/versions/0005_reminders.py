"""reminders: ledger, digests, unsubscribes

Revision ID: 0005_reminders
Revises: 0004_learning_monitor
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_reminders'
down_revision = '0004_learning_monitor'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_reminder_digests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('term_id', sa.BigInteger(), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('learners', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('planned_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=80), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('message_id', sa.String(length=200), nullable=True),
    sa.Column('to_address', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_reminder_digests')),
    sa.UniqueConstraint('term_id', 'day', name='uq_mls_reminder_digests_level_day')
    )
    with op.batch_alter_table('mls_reminder_digests', schema=None) as batch_op:
        batch_op.create_index('ix_mls_reminder_digests_work', ['state', 'next_attempt_at'], unique=False)

    op.create_table('mls_unsubscribes',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('email', sa.String(length=200), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_mls_unsubscribes'))
    )
    op.create_table('mls_reminders',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('term_id', sa.BigInteger(), nullable=False),
    sa.Column('expired_on', sa.Date(), nullable=False),
    sa.Column('step', sa.SmallInteger(), nullable=False),
    sa.Column('digest_id', sa.BigInteger(), nullable=True),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=300), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('planned_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=80), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('message_id', sa.String(length=200), nullable=True),
    sa.Column('to_address', sa.String(length=200), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['digest_id'], ['mls_reminder_digests.id'], name=op.f('fk_mls_reminders_digest_id_mls_reminder_digests')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_reminders')),
    sa.UniqueConstraint('user_id', 'term_id', 'expired_on', 'step', name='uq_mls_reminders_chain_step')
    )
    with op.batch_alter_table('mls_reminders', schema=None) as batch_op:
        batch_op.create_index('ix_mls_reminders_level_chain', ['term_id', 'expired_on', 'user_id'], unique=False)
        batch_op.create_index('ix_mls_reminders_planned_at', ['planned_at'], unique=False)
        batch_op.create_index('ix_mls_reminders_work', ['state', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key still uses.
    op.drop_table('mls_reminders')
    op.drop_table('mls_unsubscribes')
    op.drop_table('mls_reminder_digests')
