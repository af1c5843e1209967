"""Small helpers the admin blueprints share (reminders, webhooks, programs, grants, monitor).

They live here, not in one feature's views, so that no feature imports another's blueprint module
just to format a label or name the acting administrator.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from sidecar.web.auth import current_admin


def actor() -> str:
    """The signed-in administrator's login for audit events; ``"?"`` when there is none."""
    admin = current_admin()
    return admin.login if admin else "?"


def label(texts: Mapping[str, Any], value: str) -> str:
    """The text ``texts`` has for ``value`` (a state, a source) in the UI's language; the value itself when it
    has none (a state newer than the table is shown as stored, not hidden)."""
    text = texts.get(value)
    return str(text) if text is not None else value


def shorten(text: str | None, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, for previews of long error messages."""
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def query_day(args: Mapping[str, str], name: str) -> tuple[date | None, str | None]:
    """The ``YYYY-MM-DD`` day in query parameter ``name``: ``(day, None)``, ``(None, None)`` when it is
    absent or blank, ``(None, raw)`` when it is not a date (``raw`` cut to 40 characters, for the message)."""
    raw = (args.get(name) or "").strip()
    if not raw:
        return None, None
    try:
        return date.fromisoformat(raw), None
    except ValueError:
        return None, raw[:40]
