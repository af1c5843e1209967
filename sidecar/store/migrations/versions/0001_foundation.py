"""foundation: audit events, setting overrides, job leases

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0001_foundation'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_audit_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('occurred_at', sa.DateTime(), nullable=False),
    sa.Column('subject_type', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=80), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('source_ip', sa.String(length=45), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_audit_events'))
    )
    with op.batch_alter_table('mls_audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_mls_audit_events_occurred_at'), ['occurred_at'], unique=False)
        batch_op.create_index('ix_mls_audit_events_subject', ['subject_type', 'subject_id', 'id'], unique=False)

    op.create_table('mls_job_leases',
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('holder', sa.String(length=120), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('last_started_at', sa.DateTime(), nullable=True),
    sa.Column('last_finished_at', sa.DateTime(), nullable=True),
    sa.Column('last_outcome', sa.String(length=200), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_mls_job_leases'))
    )
    op.create_table('mls_setting_overrides',
    sa.Column('scope', sa.String(length=60), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('value', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('updated_by', sa.String(length=120), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'name', name=op.f('pk_mls_setting_overrides'))
    )


def downgrade() -> None:
    op.drop_table('mls_setting_overrides')
    op.drop_table('mls_job_leases')
    with op.batch_alter_table('mls_audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_mls_audit_events_subject')
        batch_op.drop_index(batch_op.f('ix_mls_audit_events_occurred_at'))

    op.drop_table('mls_audit_events')
