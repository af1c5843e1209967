"""WordPress's input handling and error bodies, as PHP does them (validation, sanitising, forms)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Answer", "CRITICAL_ERROR_HTML", "MAINTENANCE_HTML", "GATEWAY_TIMEOUT_HTML", "BAD_GATEWAY_HTML", "FORBIDDEN",
    "BadJson", "is_email", "php_is_numeric", "php_empty", "absint", "whole_number", "sanitize_text_field",
    "sanitize_user", "normalise_app_password", "wp_error_body", "wp_error", "php_form", "parse_body", "lookup",
]

FORBIDDEN = "Sorry, you are not allowed to do that."

#: ``wp_die()`` after a PHP fatal (WordPress's recovery-mode page).
CRITICAL_ERROR_HTML = """<!DOCTYPE html>
<html lang="ru-RU">
<head>
\t<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />
\t<meta name="viewport" content="width=device-width">
\t<meta name='robots' content='max-image-preview:large, noindex, follow' />
\t<title>WordPress &rsaquo; Error</title>
</head>
<body id="error-page">
\t<div class="wp-die-message"><p>There has been a critical error on this website.</p><p><a href="https://wordpress.org/documentation/article/faq-troubleshooting/">Learn more about troubleshooting WordPress.</a></p></div></body>
</html>
"""
#: What WordPress serves while ``.maintenance`` exists (updates in progress).
MAINTENANCE_HTML = """<!DOCTYPE html>
<html lang="ru-RU">
<head><meta http-equiv="Content-Type" content="text/html; charset=utf-8" /><title>Maintenance</title></head>
<body id="error-page"><div class="wp-die-message"><h1>Briefly unavailable for scheduled maintenance. Check back in a minute.</h1></div></body>
</html>
"""
#: nginx in front of PHP-FPM: ``fastcgi_read_timeout`` passed (the PHP worker goes on).
GATEWAY_TIMEOUT_HTML = """<html>
<head><title>504 Gateway Time-out</title></head>
<body>
<center><h1>504 Gateway Time-out</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""
#: nginx when the PHP-FPM worker died under the request (restart, OOM kill).
BAD_GATEWAY_HTML = """<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

_EMAIL_LOCAL = re.compile(r"^[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9-]+$", re.IGNORECASE)
_PHP_NUMERIC = re.compile(r"^[ \t\n\r\v\f]*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*$")
_PHP_INT = re.compile(r"^[ \t\n\r\v\f]*[+-]?\d+[ \t\n\r\v\f]*$")


@dataclass
class Answer:
    """What PHP sends back: a JSON body or an HTML page, with extra headers."""

    status: int
    json: Any = None
    html: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class BadJson(ValueError):
    """The body claims to be JSON and is not (WordPress answers ``rest_invalid_json``)."""


def is_email(value: object) -> bool:
    """WordPress ``is_email`` (the checks it makes, in its order)."""
    if not isinstance(value, str) or len(value) < 6 or value.find("@", 1) == -1:
        return False
    local, domain = value.split("@", 1)
    if not _EMAIL_LOCAL.match(local) or ".." in domain:
        return False
    if domain.strip(" \t\n\r\0\x0b.") != domain:
        return False
    labels = domain.split(".")
    if len(labels) < 2:
        return False
    return all(label.strip(" \t\n\r\0\x0b-") == label and _DOMAIN_LABEL.match(label) for label in labels)


def php_is_numeric(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and bool(_PHP_NUMERIC.match(value))


def php_empty(value: object) -> bool:
    """PHP ``empty()``: ``''``, ``'0'``, 0, 0.0, false, null and empty arrays are empty."""
    return value in (None, False, 0, 0.0, "", "0") or (isinstance(value, (list, dict)) and not value)


def absint(value: object) -> int:
    """PHP ``absint``: ``abs(intval())`` (``'1.9'`` -> 1, ``-5`` -> 5, ``'1e3'`` -> 1000)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return abs(value)
    if isinstance(value, float):
        return abs(int(value)) if value == value and abs(value) != float("inf") else 0
    if isinstance(value, str):
        if _PHP_INT.match(value):
            return abs(int(value.strip()))
        if _PHP_NUMERIC.match(value):
            return abs(int(float(value)))
    return 0


def whole_number(value: object) -> int | None:
    """An integer given as a JSON number or a digit string, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _PHP_INT.match(value):
        return int(value.strip())
    return None


def sanitize_text_field(value: object) -> str:
    """Close to WordPress ``sanitize_text_field``: no tags, no octets, single-line, trimmed."""
    if isinstance(value, bool):
        value = "1" if value else ""
    elif isinstance(value, (int, float)):
        value = str(value)
    elif not isinstance(value, str):
        return ""
    text = re.sub(r"<(script|style)[^>]*?>.*?</\1>", "", value, flags=re.IGNORECASE | re.DOTALL)
    text = re.sub(r"<[^>]*?>", "", text)
    text = re.sub(r"%[a-fA-F0-9]{2}", "", text)
    text = re.sub(r"[\r\n\t ]+", " ", text)
    return text.strip()


def sanitize_user(login: str) -> str:
    """WordPress ``sanitize_user`` (non-strict)."""
    text = re.sub(r"<[^>]*?>", "", login)
    text = re.sub(r"%([a-fA-F0-9][a-fA-F0-9])", "", text)
    text = re.sub(r"&.+?;", "", text)
    text = re.sub(r"[^a-zA-Z0-9 _.\-@]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def normalise_app_password(password: str) -> str:
    """WordPress shows application passwords in groups of four and ignores everything but letters/digits."""
    return re.sub(r"[^a-zA-Z0-9]", "", password)


def wp_error_body(code: str, message: str, status: int, **data: Any) -> dict[str, Any]:
    """``WP_Error`` as the REST server renders it."""
    return {"code": code, "message": message, "data": {"status": status, **data}}


def wp_error(code: str, message: str, status: int, **data: Any) -> Answer:
    return Answer(status, json=wp_error_body(code, message, status, **data))


def php_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form or query fields the way PHP parses them: ``a[]=1&a[]=2`` -> list, ``a[x]=1`` -> dict."""
    result: dict[str, Any] = {}
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    for name, values in grouped.items():
        match = re.match(r"^([^\[\]]+)\[([^\]]*)\]$", name)
        if not match:
            result[name] = values[-1]
            continue
        base, index = match.groups()
        container = result.get(base)
        if index == "":
            if not isinstance(container, list):
                container = []
            container.extend(values)
        else:
            if not isinstance(container, dict):
                container = {} if not isinstance(container, list) else dict(enumerate(container))
            container[index] = values[-1]
        result[base] = container
    for key, value in list(result.items()):
        if isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
            result[key] = [value[k] for k in sorted(value, key=lambda k: int(k))]
    return result


def parse_body(mimetype: str, raw: bytes) -> dict[str, Any]:
    """The JSON parameters of a REST request (``{}`` unless the body is a JSON object)."""
    if mimetype != "application/json" or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise BadJson() from exc
    return parsed if isinstance(parsed, dict) else {}


def lookup(name: str, *sources: Mapping[str, Any]) -> tuple[bool, Any]:
    """``WP_REST_Request::get_param``: the first source that has the parameter wins (JSON, form, query)."""
    for source in sources:
        if name in source:
            return True, source[name]
    return False, None
