"""amoCRM side of the grant bridge: the webhook's lead id, the API reads, and the grant fields of a lead.

Replaces the legacy relay script (legacy-plugins.md 1.4 b) without its defects:

* the webhook body is accepted in the same three places and both encodings (form, JSON);
* every linked contact is tried for an e-mail, not only the first one (1.11 item 14);
* API failures are classified as transient (retry later) or permanent, so the caller can queue a
  durable retry instead of losing the grant as the synchronous relay did;
* the bearer token travels only in the ``Authorization`` header and never in messages or logs;
* ``Дата старта`` is parsed so the bridge can keep it in its audit trail.

Nothing here decides about access: unit words, level existence and e-mail syntax are validated by the
bridge, which owns those rules for every input channel.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone, tzinfo
from typing import Any
from urllib.parse import urlsplit

import requests

log = logging.getLogger(__name__)

__all__ = [
    "AmoApiError",
    "AmoClient",
    "AmoFetcher",
    "AmoFieldNames",
    "AmoGrantFields",
    "AmoPayloadError",
    "LeadEvent",
    "contact_email",
    "extract_lead_event",
    "extract_lead_id",
    "linked_contact_ids",
    "parse_lead",
    "parse_start_date",
    "php_int",
]

# amoCRM ids are unsigned 64-bit in practice; the store keeps them in BIGINT columns.
MAX_ID = 2**63 - 1
# Durations end up in MemberLux's INT column.
MAX_DURATION = 2**31 - 1
# One lead read plus up to four contact reads: bounds the work one webhook can cause.
MAX_READS = 5


# --- errors -----------------------------------------------------------------------------------

class AmoPayloadError(ValueError):
    """The webhook body or the lead's data cannot give a grant. ``code`` is stable for callers and tests.

    Codes: ``lead_id_missing``, ``lead_id_invalid``, ``contact_missing``, ``email_missing``,
    ``course_missing``, ``course_invalid``, ``duration_invalid``, ``units_missing``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AmoApiError(Exception):
    """An amoCRM API read failed.

    ``transient`` means the same read may succeed later (5xx, 429, timeouts, connection failures);
    otherwise retrying cannot help (401/403/404, 204 "no such entity", redirects). ``status`` is the
    HTTP status or ``None`` when no answer arrived. ``code`` is a stable short name such as
    ``not_found``, ``unauthorized``, ``rate_limited``, ``server_error``, ``timeout``, ``connection``.
    """

    def __init__(self, status: int | None, message: str, transient: bool, *, code: str = "http_error",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.transient = transient
        self.code = code
        self.retry_after = retry_after

    @property
    def permanent(self) -> bool:
        return not self.transient


# --- webhook body -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LeadEvent:
    lead_id: int
    status_id: int | None = None
    pipeline_id: int | None = None


# Where the legacy relay looked, in its order: (container path, key of the lead id).
_LEAD_LOCATIONS: tuple[tuple[tuple[str | int, ...], str], ...] = (
    (("leads", "status", 0), "id"),
    (("leads", 0), "id"),
    ((), "lead_id"),
)


def _flat_key(path: Sequence[str | int]) -> str:
    # amoCRM posts PHP-style bracketed names: leads[status][0][id]
    head, *rest = [str(p) for p in path]
    return head + "".join(f"[{p}]" for p in rest)


def _unwrap(value: Any) -> Any:
    # parse_qs() gives lists of values; the first one counts, as PHP's parser keeps a single value.
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _child(node: Any, segment: str | int) -> Any:
    if isinstance(node, Mapping):
        for key in (segment, str(segment)):
            if key in node:
                return node[key]
        return None
    if isinstance(node, list) and isinstance(segment, int):
        return node[segment] if 0 <= segment < len(node) else None
    return None


def _lookup(payload: Mapping, path: Sequence[str | int]) -> Any:
    flat = _flat_key(path)
    if flat in payload:
        value = _unwrap(payload[flat])
        if value is not None:
            return value
    node: Any = payload
    for segment in path:
        node = _child(node, segment)
        if node is None:
            return None
    return _unwrap(node) if not isinstance(node, Mapping) else node


def _positive_int(value: Any, limit: int = MAX_ID) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,19}\s*", value):
        number = int(value)
    else:
        return None
    return number if 0 < number <= limit else None


def extract_lead_event(payload: Mapping) -> LeadEvent:
    """Lead id (and, when sent, status and pipeline) from an amoCRM webhook body.

    ``payload`` is a flat form mapping (``{"leads[status][0][id]": "42"}``, values may be lists as
    ``parse_qs`` gives them, or a werkzeug ``MultiDict``) or decoded JSON with the same nesting. The
    first *present* location wins, as in the legacy relay: a present but malformed id is an error even
    when a later location holds a good one. ``status_id``/``pipeline_id`` come from the same element as
    the id; ``None`` means absent or not a positive integer.
    """
    if not isinstance(payload, Mapping):
        raise AmoPayloadError("lead_id_missing", "webhook body is not an object")
    for container, id_key in _LEAD_LOCATIONS:
        raw = _lookup(payload, (*container, id_key))
        if raw is None:
            continue
        where = _flat_key((*container, id_key)) if container else id_key
        lead_id = _positive_int(raw)
        if lead_id is None:
            shown = repr(raw) if isinstance(raw, (str, int, float)) else type(raw).__name__
            raise AmoPayloadError("lead_id_invalid", f"{where} must be a positive integer, got {shown[:40]}")
        status_id = _positive_int(_lookup(payload, (*container, "status_id")))
        pipeline_id = _positive_int(_lookup(payload, (*container, "pipeline_id")))
        return LeadEvent(lead_id=lead_id, status_id=status_id, pipeline_id=pipeline_id)
    raise AmoPayloadError("lead_id_missing",
                          "no lead id in leads[status][0][id], leads[0][id] or lead_id")


def extract_lead_id(form_or_json: Mapping) -> int:
    return extract_lead_event(form_or_json).lead_id


# --- lead and contact data --------------------------------------------------------------------

@dataclass(frozen=True)
class AmoFieldNames:
    """Which custom fields carry the grant. A ``str`` is matched exactly (case and spaces count) against
    ``field_name`` for lead fields and ``field_code`` for contact fields, as the legacy relay did; an
    ``int`` is matched against ``field_id``, which survives a field being renamed in amoCRM."""

    course: str | int = "Курс"
    duration: str | int = "Срок выдачи"
    units: str | int = "Тип срока"
    start_date: str | int = "Дата старта"
    email_code: str | int = "EMAIL"
    phone_code: str | int = "PHONE"


@dataclass(frozen=True)
class AmoGrantFields:
    email: str
    term_id: int
    duration: int
    units_raw: str
    start_date_raw: str | None
    contact_id: int | None
    lead_id: int
    first_name: str = ""
    last_name: str = ""
    phone: str = ""
    start_date: date | None = None
    course_raw: str = ""
    pipeline_id: int | None = None
    status_id: int | None = None

    def legacy_meta(self) -> dict[str, Any]:
        """The ``meta`` object the legacy relay forwarded, kept for the audit trail."""
        return {"amo_lead_id": self.lead_id, "amo_contact_id": self.contact_id,
                "date_start_raw": self.start_date_raw}


def _fields(entity: Mapping) -> list[Mapping]:
    values = entity.get("custom_fields_values")
    if not isinstance(values, list):  # amoCRM sends null when an entity has no custom fields
        return []
    return [f for f in values if isinstance(f, Mapping)]


def _matching(entity: Mapping, key: str | int, attribute: str) -> list[Mapping]:
    if isinstance(key, int) and not isinstance(key, bool):
        return [f for f in _fields(entity) if _positive_int(f.get("field_id")) == key]
    return [f for f in _fields(entity) if f.get(attribute) == key]


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return None


def _field_values(field: Mapping) -> list[Any]:
    values = field.get("values")
    if not isinstance(values, list):
        return []
    return [v.get("value") if isinstance(v, Mapping) else None for v in values]


def _first_value(entity: Mapping, key: str | int, attribute: str = "field_name") -> Any:
    """First value of the first matching field; the legacy relay read nothing else."""
    for field in _matching(entity, key, attribute):
        values = _field_values(field)
        return values[0] if values else None
    return None


def _first_non_empty(entity: Mapping, key: str | int, attribute: str) -> str:
    for field in _matching(entity, key, attribute):
        for value in _field_values(field):
            text = (_text(value) or "").strip()
            if text:
                return text
    return ""


def _label(key: str | int) -> str:
    return f"field_id {key}" if isinstance(key, int) else f"'{key}'"


def php_int(value: Any) -> int:
    """PHP's ``(int)`` cast as the legacy relay applied it: leading whitespace, an optional sign and
    the leading digits count, anything else gives 0 (``"6 мес"`` -> 6, ``"шесть"`` -> 0)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else 0
    if isinstance(value, str):
        match = re.match(r"\s*([+-]?[0-9]+)", value)
        return int(match.group(1)) if match else 0
    return 0


_COURSE_ID = re.compile(r"\(([0-9]{1,18})\)$")
_DMY = re.compile(r"([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{4})")
_YMD = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")


def parse_start_date(raw: Any, tz: tzinfo = timezone.utc) -> date | None:
    """``Дата старта`` as a date: unix seconds (amoCRM date fields, read in ``tz``), ``dd.mm.yyyy`` or
    ``yyyy-mm-dd``. Anything else gives ``None``: the date is informational and must not block a grant."""
    if isinstance(raw, bool) or raw is None:
        return None
    text = str(raw).strip() if isinstance(raw, (str, int)) else ""
    if not text:
        return None
    try:
        if text.isascii() and text.isdecimal():
            return datetime.fromtimestamp(int(text), tz).date()
        for pattern, order in ((_DMY, (2, 1, 0)), (_YMD, (0, 1, 2))):
            match = pattern.fullmatch(text)
            if match:
                parts = [int(p) for p in match.groups()]
                return date(parts[order[0]], parts[order[1]], parts[order[2]])
    except (ValueError, OverflowError, OSError):
        return None
    return None


def linked_contact_ids(lead: Mapping) -> list[int]:
    """Ids under ``_embedded.contacts`` in amoCRM's order, without duplicates or malformed entries."""
    embedded = lead.get("_embedded")
    contacts = embedded.get("contacts") if isinstance(embedded, Mapping) else None
    ids: list[int] = []
    for entry in contacts if isinstance(contacts, list) else []:
        contact_id = _positive_int(entry.get("id")) if isinstance(entry, Mapping) else None
        if contact_id is not None and contact_id not in ids:
            ids.append(contact_id)
    return ids


def contact_email(contact: Mapping, names: AmoFieldNames = AmoFieldNames()) -> str:
    """The contact's first non-empty e-mail, trimmed and lower-cased; ``""`` when it has none."""
    return _first_non_empty(contact, names.email_code, "field_code").lower()


@dataclass(frozen=True)
class _LeadFields:
    lead_id: int
    term_id: int
    course_raw: str
    duration: int
    units_raw: str
    start_date_raw: str | None
    start_date: date | None
    pipeline_id: int | None
    status_id: int | None


def _parse_lead_fields(lead: Mapping, names: AmoFieldNames, tz: tzinfo) -> _LeadFields:
    if not isinstance(lead, Mapping):
        raise AmoPayloadError("lead_id_invalid", "the lead is not an object")
    lead_id = _positive_int(lead.get("id"))
    if lead_id is None:
        raise AmoPayloadError("lead_id_invalid", "the lead has no positive integer id")

    course = (_text(_first_value(lead, names.course)) or "").strip()
    if not course:
        raise AmoPayloadError("course_missing", f"lead field {_label(names.course)} is missing or empty")
    match = _COURSE_ID.search(course)
    term_id = int(match.group(1)) if match else 0
    if term_id <= 0:
        raise AmoPayloadError("course_invalid",
                              f"lead field {_label(names.course)} must end with '(<level id>)', got {course[:80]!r}")

    raw_duration = _first_value(lead, names.duration)
    duration = php_int(raw_duration)
    if not 0 < duration <= MAX_DURATION:
        shown = _text(raw_duration)
        problem = "is missing" if shown is None else f"must start with a positive number, got {shown[:40]!r}"
        raise AmoPayloadError("duration_invalid", f"lead field {_label(names.duration)} {problem}")

    units = _text(_first_value(lead, names.units))
    if units is None or not units.strip():
        raise AmoPayloadError("units_missing", f"lead field {_label(names.units)} is missing or empty")

    start_raw = _first_value(lead, names.start_date)
    start_text = _text(start_raw)
    return _LeadFields(
        lead_id=lead_id, term_id=term_id, course_raw=course, duration=duration, units_raw=units,
        start_date_raw=start_text, start_date=parse_start_date(start_raw, tz),
        pipeline_id=_positive_int(lead.get("pipeline_id")), status_id=_positive_int(lead.get("status_id")),
    )


def _person_names(contact: Mapping) -> tuple[str, str]:
    first = (_text(contact.get("first_name")) or "").strip()
    last = (_text(contact.get("last_name")) or "").strip()
    if first or last:
        return first, last
    # Contacts created by forms often carry only the display name.
    parts = (_text(contact.get("name")) or "").split(None, 1)
    return (parts[0] if parts else ""), (parts[1].strip() if len(parts) > 1 else "")


def parse_lead(lead: dict, contacts: list[dict], names: AmoFieldNames = AmoFieldNames(), *,
               tz: tzinfo = timezone.utc) -> AmoGrantFields:
    """Grant fields of a lead and its contacts (full contact objects, in ``_embedded.contacts`` order).

    Lead fields are checked first (course, duration, units), then the contacts: the first contact that
    has an e-mail supplies e-mail, names and phone. ``tz`` is the amoCRM account's zone, used to read
    unix-second dates as calendar days.
    """
    fields = _parse_lead_fields(lead, names, tz)
    candidates = [c for c in contacts if isinstance(c, Mapping)]
    if not candidates:
        raise AmoPayloadError("contact_missing", f"lead {fields.lead_id} has no linked contact")
    for contact in candidates:
        email = contact_email(contact, names)
        if email:
            first_name, last_name = _person_names(contact)
            return AmoGrantFields(
                email=email, term_id=fields.term_id, duration=fields.duration, units_raw=fields.units_raw,
                start_date_raw=fields.start_date_raw, contact_id=_positive_int(contact.get("id")),
                lead_id=fields.lead_id, first_name=first_name, last_name=last_name,
                phone=_first_non_empty(contact, names.phone_code, "field_code"),
                start_date=fields.start_date, course_raw=fields.course_raw,
                pipeline_id=fields.pipeline_id, status_id=fields.status_id,
            )
    raise AmoPayloadError("email_missing",
                          f"none of the {len(candidates)} contact(s) of lead {fields.lead_id} has an e-mail")


# --- API client -------------------------------------------------------------------------------

_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token; amoCRM issues JWTs
_PERMANENT_CODES = {401: "unauthorized", 402: "payment_required", 403: "forbidden", 404: "not_found"}


class AmoClient:
    """Read-only client of amoCRM API v4 with a long-lived bearer token.

    No retries here: a transient failure is reported at once so the bridge can reschedule the whole
    job durably instead of holding the webhook open.
    """

    def __init__(self, base_url: str, token: str, timeout: float = 10.0,
                 session: requests.Session | None = None) -> None:
        base = (base_url or "").strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("amoCRM base URL must be an absolute http(s) URL, e.g. https://school.amocrm.ru")
        if not token or not token.strip():
            raise ValueError("amoCRM token is empty")
        if not _BEARER_TOKEN.fullmatch(token.strip()):
            # http.client would otherwise fail on the header and quote the token in its error.
            raise ValueError("amoCRM token has characters a bearer token cannot contain (check for a pasted "
                             "'Bearer ' prefix, quotes or line breaks)")
        self.base_url = base
        self.timeout = timeout
        self._token = token.strip()
        # Authorization goes per request: a shared session must not carry the token to other hosts.
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"AmoClient({self.base_url!r})"

    def get_lead(self, lead_id: int) -> dict[str, Any]:
        """``GET /api/v4/leads/{id}?with=contacts``: the lead with its linked contact ids embedded."""
        return self._get(f"/api/v4/leads/{self._id(lead_id)}", {"with": "contacts"}, f"lead {lead_id}")

    def get_contact(self, contact_id: int) -> dict[str, Any]:
        """``GET /api/v4/contacts/{id}``."""
        return self._get(f"/api/v4/contacts/{self._id(contact_id)}", None, f"contact {contact_id}")

    @staticmethod
    def _id(value: int) -> int:
        checked = _positive_int(value)
        if checked is None:
            raise ValueError("amoCRM ids are positive integers")
        return checked

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token in text else text

    def _get(self, path: str, params: dict[str, str] | None, what: str) -> dict[str, Any]:
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json",
                   "User-Agent": "mlsidecar"}
        try:
            response = self._session.get(url, params=params, headers=headers, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.Timeout as exc:
            raise AmoApiError(None, f"amoCRM {what}: no answer within {self.timeout:g} s", True,
                              code="timeout") from exc
        except requests.ConnectionError as exc:
            raise AmoApiError(None, f"amoCRM {what}: connection to {urlsplit(self.base_url).netloc} failed "
                                    f"({type(exc).__name__})", True, code="connection") from exc
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise AmoApiError(None, f"amoCRM {what}: invalid URL ({type(exc).__name__})", False,
                              code="invalid_url") from exc
        except requests.RequestException as exc:
            # Broken transfers (truncated chunks, bad encoding) are network trouble, worth a retry.
            raise AmoApiError(None, f"amoCRM {what}: request failed ({type(exc).__name__})", True,
                              code="request_failed") from exc

        status = response.status_code
        log.debug("amoCRM GET %s -> %s", path, status)
        if status == 204:
            # API v4 answers 204 No Content for entities that do not exist (or were deleted).
            raise AmoApiError(204, f"amoCRM {what}: not found (204 No Content)", False, code="not_found")
        if 200 <= status < 300:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                # A 200 with HTML is typically a proxy or maintenance page, not a final answer.
                raise AmoApiError(status, f"amoCRM {what}: HTTP {status} without a JSON object", True,
                                  code="bad_response")
            return body

        detail = self._problem_detail(response)
        message = f"amoCRM {what}: HTTP {status}" + (f": {detail}" if detail else "")
        if 300 <= status < 400:
            raise AmoApiError(status, message + " (redirect: check the base URL)", False, code="redirect")
        if status == 429:
            raise AmoApiError(status, message, True, code="rate_limited",
                              retry_after=_retry_after(response.headers.get("Retry-After")))
        if status >= 500:
            raise AmoApiError(status, message, True, code="server_error")
        raise AmoApiError(status, message, False, code=_PERMANENT_CODES.get(status, "http_error"))

    def _problem_detail(self, response: requests.Response) -> str:
        """``title``/``detail`` of amoCRM's problem+json body, shortened; the raw body may hold anything."""
        try:
            body = response.json()
        except ValueError:
            return ""
        if not isinstance(body, dict):
            return ""
        parts = [str(body[k]) for k in ("title", "detail") if isinstance(body.get(k), (str, int))]
        return self._scrub(" - ".join(parts))[:200]


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds <= 86400 else None


# --- fetcher ----------------------------------------------------------------------------------

class AmoFetcher:
    """Everything a grant needs from amoCRM, in at most ``MAX_READS`` API calls."""

    def __init__(self, client: AmoClient, *, tz: tzinfo = timezone.utc, max_reads: int = MAX_READS) -> None:
        if max_reads < 2:
            raise ValueError("max_reads must allow the lead and at least one contact")
        self.client = client
        self.tz = tz
        self.max_reads = max_reads

    def fetch_grant_fields(self, lead_id: int, names: AmoFieldNames = AmoFieldNames()) -> AmoGrantFields:
        """Reads the lead, then its contacts in order until one has an e-mail.

        Lead fields are validated before any contact is read. A contact that no longer exists (204/404)
        is skipped; any other API error propagates so the caller can retry or give up as it classifies.
        """
        lead = self.client.get_lead(lead_id)
        _parse_lead_fields(lead, names, self.tz)
        contact_ids = linked_contact_ids(lead)
        if not contact_ids:
            raise AmoPayloadError("contact_missing", f"lead {lead_id} has no linked contact")
        contacts: list[dict[str, Any]] = []
        for contact_id in contact_ids[: self.max_reads - 1]:
            try:
                contact = self.client.get_contact(contact_id)
            except AmoApiError as exc:
                if exc.code == "not_found":
                    continue
                raise
            contacts.append(contact)
            if contact_email(contact, names):
                break
        if not contacts:
            raise AmoPayloadError("contact_missing", f"no linked contact of lead {lead_id} could be read")
        try:
            return parse_lead(lead, contacts, names, tz=self.tz)
        except AmoPayloadError as exc:
            if exc.code == "email_missing" and len(contact_ids) > self.max_reads - 1:
                raise AmoPayloadError("email_missing", f"{exc.message} (checked the first {self.max_reads - 1} "
                                                       f"of {len(contact_ids)} linked contacts)") from None
            raise
