"""mail: unknown outcomes of reminders and digests, the pre-DATA mark, the welcome e-mail outbox

Revision ID: 0009_mail_unknown_outcomes
Revises: 0008_unknown_outcomes
Create Date: 2026-12-08

Reminders and digests that the sender left ``failed`` with reason ``interrupted`` (outcome unknown)
become ``unknown``, their last update standing for the pre-DATA mark. Welcome letters recorded in a
grant's ``meta["welcome"]`` become rows of ``mls_welcome_emails``: ``sent`` and ``failed`` as they
were, ``sending`` (the letter's process stopped during the SMTP transaction) as ``unknown``.
Webhook deliveries get the same pre-DATA mark, used by e-mail endpoints.
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0009_mail_unknown_outcomes'
down_revision = '0008_unknown_outcomes'
branch_labels = None
depends_on = None

_LEDGERS = ('mls_reminders', 'mls_reminder_digests')


def upgrade() -> None:
    op.create_table('mls_welcome_emails',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('to_address', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=80), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('data_started_at', sa.DateTime(), nullable=True),
    sa.Column('message_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.ForeignKeyConstraint(['grant_id'], ['mls_grants.id'], name=op.f('fk_mls_welcome_emails_grant_id_mls_grants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_welcome_emails')),
    sa.UniqueConstraint('grant_id', name=op.f('uq_mls_welcome_emails_grant_id'))
    )
    with op.batch_alter_table('mls_welcome_emails', schema=None) as batch_op:
        batch_op.create_index('ix_mls_welcome_emails_work', ['state', 'next_attempt_at'], unique=False)

    for name in _LEDGERS:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column('data_started_at', sa.DateTime(), nullable=True))
        ledger = sa.table(name, sa.column('state', sa.String), sa.column('reason', sa.String),
                          sa.column('updated_at', sa.DateTime), sa.column('data_started_at', sa.DateTime))
        op.execute(ledger.update().where(ledger.c.state == 'failed', ledger.c.reason == 'interrupted')
                   .values(state='unknown', data_started_at=ledger.c.updated_at))

    with op.batch_alter_table('mls_webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_started_at', sa.DateTime(), nullable=True))

    _welcome_rows_from_grant_meta()


def _welcome_rows_from_grant_meta() -> None:
    bind = op.get_bind()
    grants = sa.table('mls_grants', sa.column('id', sa.String), sa.column('email', sa.String),
                      sa.column('meta', sa.JSON), sa.column('completed_at', sa.DateTime),
                      sa.column('updated_at', sa.DateTime))
    welcome = sa.table('mls_welcome_emails', *(sa.column(n) for n in (
        'grant_id', 'to_address', 'state', 'reason', 'attempts', 'next_attempt_at', 'data_started_at', 'message_id',
        'created_at', 'updated_at', 'sent_at', 'last_error')))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = []
    found = bind.execute(sa.select(grants.c.id, grants.c.email, grants.c.meta, grants.c.completed_at, grants.c.updated_at)
                         .where(sa.cast(grants.c.meta, sa.Text).like('%welcome%')))
    for grant_id, email, meta, completed_at, updated_at in found:
        state = (meta or {}).get('welcome') if isinstance(meta, dict) else None
        if state not in ('sent', 'failed', 'sending'):
            continue
        at = completed_at or updated_at or now
        rows.append({
            'grant_id': grant_id, 'to_address': (email or '')[:200],
            'state': 'unknown' if state == 'sending' else state,
            'reason': {'sent': '', 'failed': 'smtp_permanent', 'sending': 'interrupted'}[state],
            'attempts': 1, 'next_attempt_at': None, 'data_started_at': at,
            'message_id': (meta.get('welcome_message_id') or None), 'created_at': at, 'updated_at': at,
            'sent_at': at if state == 'sent' else None, 'last_error': str(meta.get('welcome_error') or '')[:500],
        })
    if rows:
        op.bulk_insert(welcome, rows)


def downgrade() -> None:
    with op.batch_alter_table('mls_webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_column('data_started_at')

    for name in _LEDGERS:
        ledger = sa.table(name, sa.column('state', sa.String), sa.column('reason', sa.String))
        op.execute(ledger.update().where(ledger.c.state == 'unknown')
                   .values(state='failed', reason='interrupted'))
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_column('data_started_at')

    with op.batch_alter_table('mls_welcome_emails', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_welcome_emails_work')

    op.drop_table('mls_welcome_emails')
