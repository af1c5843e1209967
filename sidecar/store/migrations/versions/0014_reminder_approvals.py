"""reminders: a level's letters go out only once an administrator approved the level

Revision ID: 0014_reminder_approvals
Revises: 0013_grant_alerts
Create Date: 2026-12-08

Two tables: ``mls_reminder_approvals`` (per level: approved by whom, when, after reviewing how many
letters; and the last run that held the level's letters for approval) and ``mls_reminder_awaiting``
(what that run would have sent). Every level starts not approved — except a level whose letters this
store has already sent: its owner has been sending them, and holding them now would stop learners'
chains half-way without anyone having asked for it. Such a level is recorded as approved by
``upgrade`` (audited), and can be revoked like any other (docs/upgrading.md).
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0014_reminder_approvals'
down_revision = '0013_grant_alerts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_reminder_approvals',
    sa.Column('term_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('approved_at', sa.DateTime(), nullable=True),
    sa.Column('approved_by', sa.String(length=120), nullable=False),
    sa.Column('approved_source', sa.String(length=20), nullable=False),
    sa.Column('approved_letters', sa.Integer(), nullable=True),
    sa.Column('approved_list_at', sa.DateTime(), nullable=True),
    sa.Column('listed_at', sa.DateTime(), nullable=True),
    sa.Column('listed_letters', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('term_id', name=op.f('pk_mls_reminder_approvals'))
    )
    op.create_table('mls_reminder_awaiting',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('term_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('expired_on', sa.Date(), nullable=False),
    sa.Column('step', sa.SmallInteger(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('email', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_reminder_awaiting'))
    )
    with op.batch_alter_table('mls_reminder_awaiting', schema=None) as batch_op:
        batch_op.create_index('ix_mls_reminder_awaiting_level', ['term_id', 'step', 'user_id'], unique=False)

    bind = op.get_bind()
    reminders = sa.table('mls_reminders', sa.column('term_id', sa.BigInteger), sa.column('state', sa.String))
    sending = [int(term_id) for term_id in bind.execute(
        sa.select(reminders.c.term_id).where(reminders.c.state == 'sent').distinct()).scalars()]
    if not sending:
        return
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    approvals = sa.table('mls_reminder_approvals', *(sa.column(name) for name in (
        'term_id', 'approved_at', 'approved_by', 'approved_source', 'approved_letters', 'approved_list_at',
        'listed_at', 'listed_letters')))
    bind.execute(approvals.insert(), [
        {'term_id': term_id, 'approved_at': now, 'approved_by': 'upgrade', 'approved_source': 'upgrade',
         'approved_letters': None, 'approved_list_at': None, 'listed_at': None, 'listed_letters': 0}
        for term_id in sorted(sending)])
    audit = sa.table('mls_audit_events', sa.column('occurred_at', sa.DateTime), sa.column('subject_type', sa.String),
                     sa.column('subject_id', sa.String), sa.column('action', sa.String), sa.column('actor', sa.String),
                     sa.column('details', sa.JSON))
    bind.execute(audit.insert(), [
        {'occurred_at': now, 'subject_type': 'monitor_level', 'subject_id': str(term_id),
         'action': 'reminders.approved', 'actor': 'upgrade',
         'details': {'source': 'upgrade', 'why': 'this store had already sent letters of the level'}}
        for term_id in sorted(sending)])


def downgrade() -> None:
    with op.batch_alter_table('mls_reminder_awaiting', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_reminder_awaiting_level')

    op.drop_table('mls_reminder_awaiting')
    op.drop_table('mls_reminder_approvals')
