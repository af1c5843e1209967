"""Logging set-up: text or JSON lines, request ids, and masking of personal data and secrets.

E-mail addresses are masked in every record (``a***@example.org``) because logs travel further than
the database does; the audit trail in the store keeps the full value where it is needed. The same
masking covers what libraries log on their own (Flask's "Exception on <path>", werkzeug's request
lines) and the formatted tracebacks: an exception message can quote a request path with its secret
token, or the SQL parameters of a failed statement with an e-mail in them. Configured secret values
(:func:`register_secrets`) are replaced wherever they appear.

In the text format every line of the log starts with a time stamp. Values from outside (paths,
headers, form fields) can hold CR/LF or other line breaks; they are escaped in the message, and the
lines of a traceback are indented, so nobody can write a line that passes for a record of its own.
JSON lines need no escaping: ``json.dumps`` escapes control characters by construction.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import datetime, timezone

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]*@([A-Za-z0-9.\-]+\.[A-Za-z]{2,})")


def mask_emails(text: str) -> str:
    return _EMAIL.sub(r"\1***@\2", text)


# URL segments that are credentials: webhook path tokens (amoCRM, MemberLux) and unsubscribe links.
# A token ends where a URL segment ends, and also at quotes/brackets, as in "Exception on /hooks/x/T [POST]".
_PATH_SECRET = re.compile(r"(/hooks/[A-Za-z0-9_-]+/|/unsubscribe/)[^/\s?#'\"\]\[<>]+")
# SQLAlchemy quotes a failed statement's parameters in the exception message: e-mails, names, tokens.
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
_MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words; no real secret is that short

_secrets_lock = threading.Lock()
_secret_values: tuple[str, ...] = ()


def loggable_path(path: str) -> str:
    """A request path fit for the log: credential segments replaced by ``***``."""
    return _PATH_SECRET.sub(r"\1***", path)


def register_secrets(values: Iterable[str]) -> None:
    """Replace these literal values by ``***`` in every log record from now on (configured secrets)."""
    global _secret_values
    with _secrets_lock:
        known = set(_secret_values)
        known.update(v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH)
        # Longest first, so a secret that contains another is masked whole.
        _secret_values = tuple(sorted(known, key=len, reverse=True))


def configured_secrets(settings: object) -> list[str]:
    """Every secret value in a settings tree: the objects with ``reveal()`` (config.Secret).

    Duck-typed so that this module does not import the configuration (passwords in URLs are refused there).
    """
    from pydantic import BaseModel

    found: list[str] = []

    def walk(value: object) -> None:
        if callable(getattr(value, "reveal", None)):
            found.append(str(value.reveal()))  # type: ignore[attr-defined]
            walk(getattr(value, "previous", None))  # the value a rotated key (config.Credential) still accepts
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(settings)
    return found


def scrub(text: str) -> str:
    """``text`` without secrets, path tokens, SQL parameters or e-mail addresses."""
    for value in _secret_values:
        if value in text:
            text = text.replace(value, "***")
    text = _SQL_PARAMETERS.sub("[parameters: ***]", text)
    return mask_emails(loggable_path(text))


# C0 and C1 controls, DEL, and the Unicode line/paragraph separators: anything a viewer may break a line at.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


def _escape_control(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters and line separators written as escapes."""
    return _CONTROL.sub(_escape_control, text)


class _ContextFilter(logging.Filter):
    """Adds the request id and scrubs the record in place: message, traceback and stack.

    Working on the record (not the output) means any formatter on the handler prints the scrubbed
    text: :class:`logging.Formatter` uses a pre-set ``exc_text`` instead of formatting the traceback.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        if getattr(record, "_mls_scrubbed", False):  # several of our handlers may see one record
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        record._mls_scrubbed = True
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "request_id": getattr(record, "request_id", "-"),
        }
        if record.exc_info or record.exc_text:
            entry["exception"] = scrub(record.exc_text or self.formatException(record.exc_info))  # type: ignore[arg-type]
        if record.stack_info:
            entry["stack"] = scrub(record.stack_info)
        # json.dumps escapes C0 controls only; C1 controls and U+2028/2029 stay raw with ensure_ascii=False,
        # and many readers (Python's splitlines, JavaScript before ES2019) break lines at them.
        return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", json.dumps(entry, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """One line per record; a traceback follows on lines indented with ``  | ``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self.converter = time.gmtime

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's method name
        saved = record.message
        record.message = escape_controls(scrub(saved))
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        saved = (record.exc_info, record.exc_text, record.stack_info)
        extra = "\n".join(part for part in saved[1:] if part)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if not extra:
            return line
        # Inside a traceback, line breaks are real; any other control character is escaped.
        lines = [escape_controls(part) for part in scrub(extra).splitlines()]
        return line + "".join("\n  | " + part for part in lines)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"

#: Loggers of the web stack that may get handlers of their own (Flask adds one when none is configured).
WEB_LOGGERS = ("werkzeug", "flask.app", "gunicorn.error")


def protect_handlers(*logger_names: str) -> None:
    """Put the scrubbing filter on the web stack's loggers and on every handler they have.

    Handlers installed by libraries (Flask's ``default_handler``, werkzeug's own stream handler) would
    otherwise print records unmasked; a filter on the logger itself scrubs the records created there
    before any handler, ours or not, sees them. (The root handler of :func:`configure_logging` has
    the filter already, for the records of every other logger.)
    """
    for name in (*WEB_LOGGERS, *logger_names):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ContextFilter) for f in logger.filters):
            logger.addFilter(_ContextFilter())
        for handler in logger.handlers:
            if not any(isinstance(f, _ContextFilter) for f in handler.filters):
                handler.addFilter(_ContextFilter())


def configure_logging(fmt: str = "text", level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Library chatter at INFO (every request line, every migration step) drowns our own records.
    for noisy in ("werkzeug", "alembic", "apscheduler", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    protect_handlers()
