"""What every command of the `mlsidecar` command line shares: loading the configuration once, building the
runtime with readable start-up errors, who is acting, and plain-text tables."""

from __future__ import annotations

import click

from sidecar.config import ConfigError, Settings, load_settings

EXIT_CONFIG = 2
EXIT_STARTUP = 3


class StartupError(click.ClickException):
    exit_code = EXIT_STARTUP


def settings_of(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config_path"))
        from sidecar.logs import configure_logging, configured_secrets, register_secrets

        configure_logging(obj["settings"].log.format, obj["settings"].log.level)
        register_secrets(configured_secrets(obj["settings"]))  # the worker's logs too, not only the web's
    return obj["settings"]


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
