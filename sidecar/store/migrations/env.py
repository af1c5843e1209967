"""Alembic environment: run against the engine the caller hands over (no alembic.ini)."""

from alembic import context

from sidecar.store.db import VERSION_TABLE
from sidecar.store import (  # noqa: F401 - registers their tables
    alert_models,
    dashboard_models,
    grant_models,
    mail_models,
    monitor_models,
    program_models,
    reminder_models,
    webhook_models,
)
from sidecar.store.models import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
