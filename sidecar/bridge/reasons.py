"""A grant's last error, kept twice: in English in ``last_error`` (the API, the alerts, the webhooks and
the CLI read it, as they always did) and as a message in the grant's meta, for the admin pages to word
in their language. A grant whose meta holds no message for its current ``last_error`` (written before
codes, or by a path that words none) shows the English as written."""

from __future__ import annotations

from typing import Any

from sidecar.domain.messages import Message, from_dict
from sidecar.store.grant_models import Grant

META_KEY = "last_error_said"
LAST_ERROR_LENGTH = 500          # mls_grants.last_error


def error_values(meta: dict[str, Any] | None, said: Message) -> dict[str, Any]:
    """The column values that record ``said`` as the grant's last error (``meta``: the grant's new meta)."""
    return {"last_error": said.english()[:LAST_ERROR_LENGTH], "meta": {**(meta or {}), META_KEY: said.as_dict()}}


def last_error(grant: Grant) -> Message | str:
    """The grant's last error as a message when its meta holds the one ``last_error`` says, else the text."""
    text = grant.last_error or ""
    said = from_dict((grant.meta or {}).get(META_KEY))
    if said is not None and text and said.english()[:LAST_ERROR_LENGTH] == text:
        return said
    return text
