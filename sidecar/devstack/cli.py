"""`mlsidecar devstack …`: build and serve the emulated MemberLux site."""

from __future__ import annotations

import json
from datetime import date

import click



@click.group()
def devstack() -> None:
    """The MemberLux emulator and its data generator (development and tests only)."""


@devstack.command("seed")
@click.option("--db-url", required=True, help="Empty database for the emulated site (SQLite file or MariaDB).")
@click.option("--users", type=click.IntRange(1, 5_000_000), default=2000, show_default=True)
@click.option("--levels", type=click.IntRange(1, 500), default=8, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--prefix", default="wp_", show_default=True)
@click.option("--today", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="UTC day the data is built around.")
@click.option("--fresh", is_flag=True, help="Drop the site's tables first.")
def devstack_seed(db_url: str, users: int, levels: int, seed: int, prefix: str, today, fresh: bool) -> None:
    """Build a realistic MemberLux site (deterministic for a given seed and day)."""
    from sidecar.devstack.site import build_demo_site

    day = today.date() if today else date.today()
    shown: list[str] = []   # the stage on the current line of stderr

    def progress(stage: str, done: int, total: int) -> None:
        """One line per stage of the seeding ("keys: 41000/98000"), rewritten in place."""
        if shown and shown[0] != stage:
            click.echo("", err=True)
        shown[:] = [stage]
        click.echo(f"\rseeding {stage}: {done}/{total}", nl=False, err=True)

    summary = build_demo_site(db_url, users=users, levels=levels, seed=seed, today=day, prefix=prefix,
                              fresh=fresh, progress=progress)
    if shown:
        click.echo("", err=True)
    import dataclasses

    click.echo(json.dumps(dataclasses.asdict(summary), indent=2, ensure_ascii=False, default=str))


@devstack.command("serve")
@click.option("--db-url", required=True)
@click.option("--prefix", default="wp_", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8081, show_default=True)
@click.option("--app-user", default="sidecar", show_default=True)
@click.option("--app-password", envvar="MLS_DEVSTACK_APP_PASSWORD", required=True,
              help="Application Password the emulator accepts (env MLS_DEVSTACK_APP_PASSWORD).")
@click.option("--dialect", type=click.Choice(["woocommerce", "term_id", "both"]), default="both", show_default=True)
@click.option("--latency", type=float, default=0.0, help="Seconds added to every order call.")
@click.option("--failure-rate", type=click.FloatRange(0, 1), default=0.0)
def devstack_serve(db_url: str, prefix: str, host: str, port: int, app_user: str, app_password: str, dialect: str,
                   latency: float, failure_rate: float) -> None:
    """Serve the emulated site's REST API on its own."""
    import sqlalchemy as sa
    from werkzeug.serving import run_simple

    from sidecar.devstack.emulator import create_emulator_app

    engine = sa.create_engine(db_url)
    app = create_emulator_app(engine, prefix=prefix, app_user=app_user, app_password=app_password, dialect=dialect,
                              latency_seconds=latency, failure_rate=failure_rate)
    run_simple(host, port, app, threaded=True)
