"""grant alerts: failed and unsettled grants, mailed once in a digest

Revision ID: 0013_grant_alerts
Revises: 0012_access_events
Create Date: 2026-12-10

Adds ``mls_alert_digests`` and ``mls_grant_alerts`` (see ``sidecar.store.alert_models``). Grants that
had already failed before this version are recorded as ``baseline``: they are counted on the first
page and in doctor like every failed grant, but not mailed — the digest is about what fails from now
on, not a list of the store's whole history.
"""
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa


revision = '0013_grant_alerts'
down_revision = '0012_access_events'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('mls_alert_digests',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('alerts', sa.Integer(), nullable=False),
    sa.Column('to_address', sa.String(length=200), nullable=False),
    sa.Column('language', sa.String(length=2), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=80), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('message_id', sa.String(length=200), nullable=True),
    sa.Column('data_started_at', sa.DateTime(), nullable=True),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_alert_digests'))
    )
    with op.batch_alter_table('mls_alert_digests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_alert_digests_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_mls_alert_digests_work', ['state', 'next_attempt_at'], unique=False)

    op.create_table('mls_grant_alerts',
    sa.Column('id', _ID, autoincrement=True, nullable=False),
    sa.Column('grant_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('since', sa.DateTime(), nullable=False),
    sa.Column('detected_at', sa.DateTime(), nullable=False),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('digest_id', _ID, nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['digest_id'], ['mls_alert_digests.id'], name=op.f('fk_mls_grant_alerts_digest_id_mls_alert_digests')),
    sa.ForeignKeyConstraint(['grant_id'], ['mls_grants.id'], name=op.f('fk_mls_grant_alerts_grant_id_mls_grants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_grant_alerts')),
    sa.UniqueConstraint('grant_id', 'kind', 'since', name='uq_mls_grant_alerts_episode')
    )
    with op.batch_alter_table('mls_grant_alerts', schema=None) as batch_op:
        batch_op.create_index('ix_mls_grant_alerts_digest_id', ['digest_id'], unique=False)
        batch_op.create_index('ix_mls_grant_alerts_state', ['state', 'detected_at'], unique=False)

    _baseline()


def _baseline() -> None:
    """Failures from before this version: known, counted, not mailed."""
    grants = sa.table('mls_grants', sa.column('id', sa.String), sa.column('status', sa.String),
                      sa.column('completed_at', sa.DateTime), sa.column('updated_at', sa.DateTime))
    alerts = sa.table('mls_grant_alerts', *(sa.column(n) for n in (
        'grant_id', 'kind', 'since', 'detected_at', 'state', 'updated_at')))
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    since = sa.func.coalesce(grants.c.completed_at, grants.c.updated_at)
    op.execute(alerts.insert().from_select(
        ['grant_id', 'kind', 'since', 'detected_at', 'state', 'updated_at'],
        sa.select(grants.c.id, sa.literal('failed'), since, since, sa.literal('baseline'), sa.literal(now, sa.DateTime))
        .where(grants.c.status == 'failed')))


def downgrade() -> None:
    # Dropping a table drops its indexes; MariaDB refuses to drop the index its foreign key uses first.
    op.drop_table('mls_grant_alerts')
    op.drop_table('mls_alert_digests')
