"""One message of every code of the registry, with values that are easy to find on a page."""

from __future__ import annotations

from string import Formatter

from sidecar.domain.messages import ENGLISH, Message

LEVEL_ID, LEVEL_NAME = 10, "Йога для начинающих"     # a level of the small test site
_VALUES = {"level": LEVEL_ID, "units": "months", "duration": 3, "detail": "the-detail-text",
           "status": "the-status-word", "value": "the-value-text", "id": 999, "max": 77, "total": 88,
           "post": 4242, "step": 6, "n": 2, "days": 14, "line": 31, "kb": 256, "name": "the_variable",
           "known": "first_name, user_email", "reason": Message("templates.too_much_work"),
           "actor": "the-admin-login", "lead": 5150, "attempts": 12, "hours": 72, "rival": "grant-rival-id",
           "order": 8181, "grant": "grant-own-id", "payments": "payments-state-text", "count": 2, "keys": "31, 32",
           "local": 60, "limit": 3660, "products": "product-list-text",
           "fields": [Message("grants.duration_required", field="lead.duration")],
           "events": "grant.accepted, grant.failed", "url": "'ftp://hooks.example'", "host": "hooks.example",
           "address": "10.9.8.7", "checked": "checked.example",
           "type": "'odd_type'", "user": 4711}
# Values a wording leaves out on purpose: the page lists a template's variables next to the field, the
# endpoint form its event types as boxes to tick and the refused URL in its own field.
OMITTED = {"known", "events", "url"}


def names_of(code: str) -> list[str]:
    return sorted({name for _, name, _, _ in Formatter().parse(ENGLISH[code]) if name})


def sample(code: str) -> Message:
    return Message(code, {name: _VALUES[name] for name in names_of(code)})


def samples() -> list[Message]:
    return [sample(code) for code in sorted(ENGLISH)]


def shown_values(message: Message) -> list[str]:
    """What a translation must show of the message's values (a level by its name, a term in words)."""
    term = ("units", "duration", "limit") if {"duration", "limit"} & set(message.params) else ()
    return [LEVEL_NAME if name == "level" else str(value) for name, value in message.params.items()
            if name not in (*term, *OMITTED) and not isinstance(value, (Message, list))]
