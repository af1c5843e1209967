"""WordPress data formats: PHP-serialized values, role maps and the site time zone.

Pure functions, no database access: the reader hands over raw column values.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phpserialize

__all__ = [
    "WpDataError",
    "php_unserialize",
    "is_serialized",
    "maybe_unserialize",
    "php_truthy",
    "capabilities",
    "SiteTimezone",
    "site_timezone",
]


class WpDataError(ValueError):
    """A stored WordPress value could not be decoded."""


# --------------------------------------------------------------------------------------------------
# PHP serialization


def _to_python(value: Any) -> Any:
    """Decode PHP strings and turn list-shaped PHP arrays into Python lists, recursively."""
    if isinstance(value, bytes):
        # PHP strings are byte strings; WordPress stores UTF-8, but a legacy latin-1 value must not
        # make the whole structure unreadable.
        return value.decode("utf-8", errors="replace")
    if isinstance(value, phpserialize.phpobject):
        return _to_python(value.__php_vars__)
    if isinstance(value, dict):
        items = [(_to_python(k), _to_python(v)) for k, v in value.items()]
        keys = [k for k, _ in items]
        # An empty PHP array stays a dict: callers mostly do ``.get()`` on options, and iterating an
        # empty dict is as harmless as iterating an empty list.
        if keys and keys == list(range(len(keys))):
            return [v for _, v in items]
        return dict(items)
    return value


def php_unserialize(value: str | bytes | None, default: Any = None) -> Any:
    """Decode a PHP-serialized value into Python types.

    ``None`` and empty input give ``default``. Malformed data raises :class:`WpDataError`, so that
    the caller decides between falling back and reporting the corrupt row.
    """
    if value is None:
        return default
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not raw.strip():
        return default
    try:
        # PHP string lengths count bytes, hence decoding only after parsing.
        parsed = phpserialize.loads(raw.strip(), decode_strings=False, object_hook=phpserialize.phpobject)
    except Exception as exc:  # phpserialize raises ValueError, EOFError, TypeError...
        reason = str(exc) or type(exc).__name__
        raise WpDataError(f"malformed PHP-serialized data ({reason})") from exc
    return _to_python(parsed)


def is_serialized(value: Any) -> bool:
    """WordPress's ``is_serialized()`` (strict mode): does this string look PHP-serialized?"""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return False
    data = value.strip()
    if data == "N;":
        return True
    if len(data) < 4 or data[1] != ":" or data[-1] not in ";}":
        return False
    kind = data[0]  # the PHP-serialized type letter
    if kind == "s":
        if data[-2] != '"':
            return False
        return bool(re.match(r"s:[0-9]+:", data))
    if kind in "aOE":
        return bool(re.match(kind + r":[0-9]+:", data))
    if kind in "bid":
        return bool(re.fullmatch(kind + r":[0-9.E+-]+;", data))
    return False


def maybe_unserialize(value: Any) -> Any:
    """WordPress's ``maybe_unserialize()``: unserialize only what looks serialized.

    Plain strings (and non-strings) come back unchanged. A value that looks serialized but is
    malformed raises :class:`WpDataError` rather than silently turning into ``False`` as in PHP.
    """
    if is_serialized(value):
        return php_unserialize(value)
    return value


def php_truthy(value: Any) -> bool:
    """PHP's boolean conversion of a value read from WordPress (``'0'`` and ``''`` are false)."""
    if isinstance(value, (bytes, str)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return text not in ("", "0")
    if isinstance(value, float):
        return value != 0.0
    return bool(value)


def capabilities(meta_value: str | bytes | None) -> set[str]:
    """Role (and per-user capability) names from the ``{prefix}capabilities`` usermeta.

    WordPress stores ``{role: true, ...}`` and treats every key as held, whatever its value, so the
    keys are returned as they are. Missing or malformed data gives an empty set: no role, no rights.
    """
    try:
        decoded = maybe_unserialize(meta_value)
    except WpDataError:
        return set()
    if not isinstance(decoded, dict):
        return set()
    return {key for key in decoded if isinstance(key, str) and key}


# --------------------------------------------------------------------------------------------------
# Time zone


@dataclass(frozen=True)
class SiteTimezone:
    """The site's time zone and where it came from.

    ``source`` is ``timezone_string``, ``gmt_offset`` or ``default`` (UTC). ``warning`` explains a
    fallback caused by a malformed setting, for the doctor and start-up logs; ``None`` when clean.
    """

    tz: tzinfo
    source: str
    warning: str | None = None


_MAX_OFFSET_HOURS = 14  # the widest offset in use anywhere (Line Islands, UTC+14)


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _offset_hours(raw: str) -> float:
    text = raw.strip().replace(",", ".")
    if ":" in text:  # "5:30" / "-3:45" as some imports write it
        sign = -1 if text.startswith("-") else 1
        hours, minutes = text.lstrip("+-").split(":", 1)
        return sign * (int(hours) + int(minutes) / 60)
    return float(text)


def _fixed_offset(hours: float) -> timezone:
    minutes = round(hours * 60)
    if minutes == 0:
        return timezone.utc
    return timezone(timedelta(minutes=minutes))


def site_timezone(timezone_string: str | None, gmt_offset: str | float | int | None) -> SiteTimezone:
    """WordPress's ``wp_timezone()``: a named zone first, else the numeric offset, else UTC."""
    problems: list[str] = []
    name = (timezone_string or "").strip()
    if name:
        zone = _zone(name)
        if zone is not None:
            return SiteTimezone(zone, "timezone_string")
        problems.append(f"timezone_string {name!r} is not a known time zone")

    raw_offset = "" if gmt_offset is None else str(gmt_offset).strip()
    if raw_offset:
        try:
            hours = _offset_hours(raw_offset)
        except ValueError:
            problems.append(f"gmt_offset {raw_offset!r} is not a number")
        else:
            if math.isfinite(hours) and abs(hours) <= _MAX_OFFSET_HOURS:
                return SiteTimezone(_fixed_offset(hours), "gmt_offset", _warning(problems, "gmt_offset"))
            problems.append(f"gmt_offset {raw_offset!r} is outside -{_MAX_OFFSET_HOURS}..+{_MAX_OFFSET_HOURS} hours")

    return SiteTimezone(timezone.utc, "default", _warning(problems, "UTC"))


def _warning(problems: list[str], used: str) -> str | None:
    if not problems:
        return None
    return "; ".join(problems) + f"; using {used} instead."
