"""What every command of the `mlsidecar` command line shares: loading the configuration once, how much it
logs, building the runtime with readable start-up errors, the ``--date`` option, who is acting, and
plain-text tables."""

from __future__ import annotations

import logging
import re
from datetime import date, datetime

import click

from sidecar.clock import Clock
from sidecar.config import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_STARTUP = 3

#: Commands that run as services: their log is what they produce, at the configured level.
SERVICE_COMMANDS = frozenset({"serve", "worker"})
#: The logger of what start-up finds about the site (tables reflected, optional modules missing).
STARTUP_LOGGER = "sidecar.bootstrap"


class StartupError(click.ClickException):
    exit_code = EXIT_STARTUP


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config_path"))
        from sidecar.logs import configured_secrets, register_secrets

        configure_cli_logging(ctx, obj["settings"])
        register_secrets(configured_secrets(obj["settings"]))  # the worker's logs too, not only the web's
    return obj["settings"]


# --- how much a command logs -------------------------------------------------------------------------

def log_level(configured: str, verbose: int, *, service: bool) -> str:
    """The log level of a command: a service logs at the configured level; any other command is quiet
    (warnings and errors only); each ``-v`` shows more (``-v``: info, ``-vv``: debug)."""
    if verbose >= 2:
        return "DEBUG"
    if verbose == 1:
        return "DEBUG" if configured == "DEBUG" else "INFO"
    if service:
        return configured
    return "ERROR" if configured == "ERROR" else "WARNING"


def shows_startup_report(verbose: int, *, service: bool) -> bool:
    """Whether the start-up report (tables reflected, optional modules missing) reaches stderr.

    Those facts about the site are `mlsidecar doctor`'s to report; printed before every command's output
    they only hide it. A service logs them (its log is read later), and so does any command with ``-v``.
    """
    return service or verbose >= 1


def configure_cli_logging(ctx: click.Context, settings: Settings) -> None:
    from sidecar.logs import configure_logging

    verbose = int((ctx.find_object(dict) or {}).get("verbose") or 0)
    service = ctx.find_root().invoked_subcommand in SERVICE_COMMANDS
    configure_logging(settings.log.format, log_level(settings.log.level, verbose, service=service))
    # Errors of start-up still print (and fail the command with their own message).
    logging.getLogger(STARTUP_LOGGER).setLevel(
        logging.NOTSET if shows_startup_report(verbose, service=service) else logging.ERROR)


# --- the day a command works on ------------------------------------------------------------------------

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class UtcDay(click.ParamType):
    """A UTC calendar day written ``YYYY-MM-DD`` (MemberLux ends access at 00:00 UTC of a key's end date)."""

    name = "day"

    def convert(self, value, param, ctx) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            if _DAY.fullmatch(text):
                return date.fromisoformat(text)
        except ValueError:
            pass
        self.fail(f"{text!r} is not a calendar day written YYYY-MM-DD (a UTC day, e.g. 2026-11-24)", param, ctx)


def day_option(help: str):
    """The ``--date`` option of every command that works as of a day: a UTC day, ``None`` for today."""
    return click.option("--date", "day", type=UtcDay(), default=None, metavar="YYYY-MM-DD", help=help)


def today_of(ctx: click.Context) -> date:
    """Today (UTC) by the command's clock: the one ``runtime_of`` gives the runtime."""
    clock = (ctx.find_object(dict) or {}).get("clock") or Clock()
    return clock.today_utc()


def preview_only(ctx: click.Context, day: date | None, dry_run: bool) -> None:
    """A command that records its work does it for today: another day can only be previewed (``--dry-run``)."""
    if day is not None and not dry_run and day != today_of(ctx):
        raise click.BadParameter(f"{day.isoformat()} is not today ({today_of(ctx).isoformat()}, UTC): "
                                 "another day can only be previewed: add --dry-run", param_hint="--date")


def runtime_of(ctx: click.Context, **kwargs):
    from sidecar.bootstrap import build_runtime

    clock = (ctx.find_object(dict) or {}).get("clock")  # embedding callers and tests may set the date
    if clock is not None:
        kwargs.setdefault("clock", clock)
    try:
        return build_runtime(settings_of(ctx), **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        raise StartupError(explain_error(exc)) from exc


def explain_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 2000 else text[:2000] + "…"


def login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - containers may run under a uid without a passwd entry
        return "unknown"


def cli_actor() -> str:
    """The actor recorded in the audit trail for a change made from the command line."""
    return f"cli:{login_name()}"


def text_table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [[("" if value is None else str(value)) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def clip(text: str | None, limit: int) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def utc(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def level_names(runtime) -> dict[int, str]:
    return {level.term_id: level.name for level in runtime.reader.levels()}
