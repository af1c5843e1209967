"""Build a complete demo WordPress + MemberLux site in one call."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from sidecar.devstack.seed import (
    DEFAULT_PROGRAM_WEBHOOK_URL,
    DEFAULT_WEBHOOK_URL,
    ProgressCallback,
    SeedSummary,
    seed_site,
)
from sidecar.devstack.wpschema import build_metadata, create_site_schema


def build_demo_site(
    db_url: str,
    *,
    users: int,
    levels: int,
    seed: int,
    today: date,
    prefix: str = "wp_",
    base_prefix: str | None = None,
    fresh: bool = False,
    progress: ProgressCallback | None = None,
    webhook_url: str = DEFAULT_WEBHOOK_URL,
    program_webhook_url: str = DEFAULT_PROGRAM_WEBHOOK_URL,
) -> SeedSummary:
    """Create the site schema in ``db_url`` and seed it.

    With ``fresh`` every table of the site (under these prefixes) is dropped first; without it the
    site must not have users yet (``seed_site`` refuses to mix with existing data).
    """
    engine = sa.create_engine(db_url)
    try:
        if fresh:
            with engine.begin() as conn:
                build_metadata(prefix, base_prefix).drop_all(conn, checkfirst=True)
        create_site_schema(engine, prefix, base_prefix)
        return seed_site(engine, users=users, levels=levels, seed=seed, today=today, prefix=prefix,
                         base_prefix=base_prefix, progress=progress, webhook_url=webhook_url,
                         program_webhook_url=program_webhook_url)
    finally:
        engine.dispose()
