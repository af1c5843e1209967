"""Request bodies of the grant intake, whatever the sender: legacy bridge, brief-style JSON, form posts.

Output is a ``ParsedRequest`` with raw values (validated later by ``sidecar.domain.grants``) and the
ids that make a request idempotent. Only the body is read: the legacy plugin fell back to query
parameters the signature does not cover (legacy-plugins.md §1.3); this parser never looks there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sidecar.domain.grants import RawGrant
from sidecar.domain.ids import MAX_ID, is_id, whole_number


class PayloadError(Exception):
    """The body cannot be used. ``status`` is 400 (malformed) or 415 (content type)."""

    def __init__(self, status: int, code: str, message: str, *, legacy_error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.legacy_error = legacy_error


@dataclass
class ParsedRequest:
    format: str                         # legacy | brief
    raw: RawGrant
    external_id: str | None = None
    source_label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    amo_lead_id: int | None = None


_BRACKETS = re.compile(r"\[([^\]]*)\]")


def php_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``key[term_id]=5&meta[tags][]=a`` -> nested dicts, the way PHP (and so WordPress) parses forms.

    ``[]`` appends under the next integer key, as PHP does; such arrays stay dicts keyed "0", "1", …
    """
    result: dict[str, Any] = {}
    for name, value in pairs:
        head, _, rest = name.partition("[")
        keys = [head] + (_BRACKETS.findall("[" + rest) if rest else [])
        node = result
        for position, key in enumerate(keys):
            if key == "":
                key = str(1 + max((int(k) for k in node if k.isascii() and k.isdecimal() and len(k) < 10), default=-1))
            if position == len(keys) - 1:
                node[key] = value
            else:
                child = node.get(key)
                if not isinstance(child, dict):
                    child = node[key] = {}
                node = child
    return result


def decode_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    mimetype = (content_type or "").split(";")[0].strip().lower()
    if not body.strip():
        raise PayloadError(400, "empty_body", "the request body is empty", legacy_error="invalid_input")
    if mimetype == "application/json" or mimetype.endswith("+json"):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PayloadError(400, "malformed_json", "the JSON body must be an object")
        return data
    if mimetype == "application/x-www-form-urlencoded":
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError(400, "malformed_form", "the form body is not UTF-8") from None
        return php_form(parse_qsl(text, keep_blank_values=True))
    raise PayloadError(415, "unsupported_media_type",
                       "send application/json or application/x-www-form-urlencoded")


def _text_or_none(value: Any, limit: int) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text[:limit] if text else None


def _lead_id(meta: dict[str, Any]) -> int | None:
    value = meta.get("amo_lead_id")
    number = whole_number(value) if not isinstance(value, float) else None
    if number is None or number <= 0:
        return None         # not a lead id: kept in meta, as before, but nothing is keyed on it
    if not is_id(number):
        # A whole number no database column holds: refused, not a 500 (OverflowError/DataError) later.
        raise PayloadError(400, "invalid_input", f"meta.amo_lead_id must be a positive integer (at most {MAX_ID})",
                           legacy_error="invalid_input")
    return number


def parse_grant_body(data: dict[str, Any]) -> ParsedRequest:
    if "user" in data or "grant" in data:
        return _brief(data)
    if "email" in data or "key" in data:
        return _legacy(data)
    raise PayloadError(400, "unrecognized_payload",
                       "expected either {email, key{term_id,duration,units}} or {user{email}, grant{term_id,duration,units}}",
                       legacy_error="invalid_input")


def _legacy(data: dict[str, Any]) -> ParsedRequest:
    key = data.get("key")
    if not isinstance(key, dict):
        raise PayloadError(400, "invalid_input", "'key' must be an object with term_id, duration and units",
                           legacy_error="invalid_input")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    raw = RawGrant(
        email=(data.get("email")), term_id=(key.get("term_id")), duration=(key.get("duration")),
        units=(key.get("units")), first_name=data.get("first_name"), last_name=data.get("last_name"),
        patronymic=data.get("patronymic"), phone=data.get("phone"),
        field_names={"term_id": "key.term_id", "duration": "key.duration", "units": "key.units"},
    )
    return ParsedRequest(format="legacy", raw=raw, external_id=_text_or_none(data.get("external_id"), 190),
                         source_label=_text_or_none(data.get("source"), 100) or "legacy", meta=meta,
                         amo_lead_id=_lead_id(meta))


def _brief(data: dict[str, Any]) -> ParsedRequest:
    user, grant = data.get("user"), data.get("grant")
    if not isinstance(user, dict) or not isinstance(grant, dict):
        raise PayloadError(400, "invalid_input", "'user' and 'grant' must both be objects")
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    raw = RawGrant(
        email=user.get("email"), term_id=grant.get("term_id"), duration=grant.get("duration"), units=grant.get("units"),
        first_name=user.get("first_name"), last_name=user.get("last_name"), patronymic=user.get("patronymic"),
        phone=user.get("phone"),
        field_names={"email": "user.email", "term_id": "grant.term_id", "duration": "grant.duration",
                     "units": "grant.units"},
    )
    return ParsedRequest(format="brief", raw=raw, external_id=_text_or_none(data.get("external_id"), 190),
                         source_label=_text_or_none(data.get("source"), 100), meta=meta, amo_lead_id=_lead_id(meta))
