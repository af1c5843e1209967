"""bundle programs: programs, steps, enrolments, events, inbox

Revision ID: 0006_programs
Revises: 0005_reminders
Create Date: 2026-11-24
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_programs'
down_revision = '0005_reminders'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mls_program_inbox',
    sa.Column('certificate_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=500), nullable=False),
    sa.PrimaryKeyConstraint('certificate_id', name=op.f('pk_mls_program_inbox'))
    )
    op.create_table('mls_programs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('counting', sa.String(length=10), nullable=False),
    sa.Column('enrol_on_first_level', sa.Boolean(), nullable=False),
    sa.Column('grant_first_step', sa.Boolean(), nullable=False),
    sa.Column('notify_email', sa.String(length=200), nullable=False),
    sa.Column('notify_step_subject', sa.String(length=300), nullable=False),
    sa.Column('notify_step_body', sa.Text(), nullable=False),
    sa.Column('notify_complete_subject', sa.String(length=300), nullable=False),
    sa.Column('notify_complete_body', sa.Text(), nullable=False),
    sa.Column('webhook_url', sa.String(length=500), nullable=False),
    sa.Column('legacy_post_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_programs')),
    sa.UniqueConstraint('legacy_post_id', name=op.f('uq_mls_programs_legacy_post_id'))
    )
    op.create_table('mls_enrolments',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('program_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('current_step', sa.Integer(), nullable=False),
    sa.Column('step_since', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['program_id'], ['mls_programs.id'], name=op.f('fk_mls_enrolments_program_id_mls_programs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_enrolments')),
    sa.UniqueConstraint('program_id', 'user_id', name='uq_mls_enrolments_program_user')
    )
    with op.batch_alter_table('mls_enrolments', schema=None) as batch_op:
        batch_op.create_index('ix_mls_enrolments_progress', ['program_id', 'status', 'current_step'], unique=False)
        batch_op.create_index('ix_mls_enrolments_user', ['user_id', 'status'], unique=False)

    op.create_table('mls_program_steps',
    sa.Column('program_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('term_id', sa.BigInteger(), nullable=False),
    sa.Column('duration', sa.Integer(), nullable=False),
    sa.Column('units', sa.String(length=10), nullable=False),
    sa.ForeignKeyConstraint(['program_id'], ['mls_programs.id'], name=op.f('fk_mls_program_steps_program_id_mls_programs')),
    sa.PrimaryKeyConstraint('program_id', 'position', name=op.f('pk_mls_program_steps'))
    )
    with op.batch_alter_table('mls_program_steps', schema=None) as batch_op:
        batch_op.create_index('ix_mls_program_steps_level', ['term_id'], unique=False)

    op.create_table('mls_enrolment_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('enrolment_id', sa.BigInteger(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('kind', sa.String(length=30), nullable=False),
    sa.Column('certificate_id', sa.BigInteger(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('grant_id', sa.String(length=32), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['enrolment_id'], ['mls_enrolments.id'], name=op.f('fk_mls_enrolment_events_enrolment_id_mls_enrolments')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_mls_enrolment_events'))
    )
    with op.batch_alter_table('mls_enrolment_events', schema=None) as batch_op:
        batch_op.create_index('ix_mls_enrolment_events_certificate', ['certificate_id'], unique=False)
        batch_op.create_index('ix_mls_enrolment_events_timeline', ['enrolment_id', 'at'], unique=False)



def downgrade() -> None:
    # Dropping a table drops its indexes; MySQL refuses to drop an index a foreign key still uses.
    op.drop_table('mls_program_inbox')
    op.drop_table('mls_enrolment_events')
    op.drop_table('mls_enrolments')
    op.drop_table('mls_program_steps')
    op.drop_table('mls_programs')
