"""What a valid grant request is, independent of who sent it and how (pure, no I/O).

Every intake format (legacy signed request, brief-style JSON, amoCRM lead) is parsed into raw
values, then ``validate_grant`` turns them into a ``GrantSpec`` or a list of field errors with
stable codes. The legacy bridge accepted anything (defect 7 of legacy-plugins.md §1.11): zero or
negative durations, unknown units silently stored as months, malformed e-mails. Here each of those
is refused with a reason the sender can act on.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sidecar.domain.ids import MAX_ID, is_id, whole_number
from sidecar.domain.messages import Message

UNITS_DAYS, UNITS_MONTHS = "days", "months"

# Units words accepted, mapped to (MemberLux unit, multiplier). The legacy relay knew eight words;
# the singular/genitive Russian forms and years are what CRM users actually type.
_UNIT_WORDS: dict[str, tuple[str, int]] = {
    **dict.fromkeys(("day", "days", "d", "день", "дня", "дней", "дн", "дн.", "сутки", "суток"), (UNITS_DAYS, 1)),
    **dict.fromkeys(("month", "months", "m", "mon", "месяц", "месяца", "месяцев", "мес", "мес."), (UNITS_MONTHS, 1)),
    **dict.fromkeys(("year", "years", "y", "год", "года", "лет", "г", "г."), (UNITS_MONTHS, 12)),
}

# Beyond ten years a CRM value is a typo, not a product (MemberLux would happily store it).
MAX_DAYS = 3660
MAX_MONTHS = 120

# users.user_email is VARCHAR(100); MemberLux's order endpoint builds the login from the local part
# and fails to create users whose local part exceeds 60 characters, then falls back to the API
# user (core.md 5.4) — such an address must never reach it.
MAX_EMAIL = 100
MAX_LOCAL_PART = 60
_EMAIL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")


@dataclass(frozen=True)
class FieldError:
    field: str                 # as the sender named it
    code: str                  # the API's stable code ("required", "invalid_duration", ...)
    said: Message              # what is wrong, for the pages

    @property
    def message(self) -> str:
        """What is wrong in English, as the API answers and the logs print it."""
        return self.said.english()


@dataclass(frozen=True)
class GrantSpec:
    """A validated request: who gets which level for how long."""

    email: str
    term_id: int
    duration: int
    units: str
    first_name: str = ""
    last_name: str = ""
    patronymic: str = ""
    phone: str = ""

    def fingerprint(self) -> str:
        """Hash of everything that decides the grant; equal requests hash equal whatever their key order."""
        canonical = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class RawGrant:
    """Values as the sender gave them (strings, numbers or None), before validation."""

    email: Any = None
    term_id: Any = None
    duration: Any = None
    units: Any = None
    first_name: Any = None
    last_name: Any = None
    patronymic: Any = None
    phone: Any = None
    field_names: dict[str, str] = field(default_factory=dict)  # our name -> the sender's name, for errors

    def name_of(self, ours: str) -> str:
        return self.field_names.get(ours, ours)


def normalize_units(raw: Any) -> tuple[str, int] | None:
    """(MemberLux unit, multiplier) for a units word, or None when it is not one we know."""
    if not isinstance(raw, str):
        return None
    return _UNIT_WORDS.get(raw.strip().lower())


def normalize_email(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    email = raw.strip()
    if not email or len(email) > MAX_EMAIL or not _EMAIL.match(email):
        return None
    local, _, domain = email.rpartition("@")
    if len(local) > MAX_LOCAL_PART or ".." in email:
        return None
    # WordPress compares e-mails case-insensitively (collation); lower-casing the domain is always
    # safe and keeps idempotency fingerprints stable across CRMs that vary the case.
    return f"{local}@{domain.lower()}"


def _as_int(raw: Any) -> int | None:
    # At most 40 digits: a longer run is no number we could use, and int() refuses 4300+ digits (a 500).
    return whole_number(raw)


def _text(raw: Any, limit: int) -> str:
    if raw is None:
        return ""
    text = re.sub(r"\s+", " ", str(raw)).strip()
    return text[:limit]


def validate_grant(raw: RawGrant) -> tuple[GrantSpec | None, list[FieldError]]:
    errors: list[FieldError] = []
    email = normalize_email(raw.email)
    if raw.email in (None, ""):
        errors.append(FieldError(raw.name_of("email"), "required", Message("grants.email_required")))
    elif email is None:
        errors.append(FieldError(raw.name_of("email"), "invalid_email",
                                 Message("grants.email_invalid", {"max": MAX_EMAIL, "local": MAX_LOCAL_PART})))

    term_id = _as_int(raw.term_id)
    if raw.term_id in (None, ""):
        errors.append(FieldError(raw.name_of("term_id"), "required", Message("grants.level_required")))
    elif not is_id(term_id):
        errors.append(FieldError(raw.name_of("term_id"), "invalid_level", Message("grants.level_invalid", {"max": MAX_ID})))

    units = normalize_units(raw.units) if raw.units not in (None, "") else (UNITS_MONTHS, 1)
    if units is None:
        errors.append(FieldError(raw.name_of("units"), "invalid_units", Message("grants.units_invalid")))
    duration = _as_int(raw.duration)
    if raw.duration in (None, ""):
        errors.append(FieldError(raw.name_of("duration"), "required", Message("grants.duration_required")))
    elif duration is None:
        errors.append(FieldError(raw.name_of("duration"), "invalid_duration", Message("grants.duration_not_number")))
    elif duration <= 0:
        errors.append(FieldError(raw.name_of("duration"), "invalid_duration", Message("grants.duration_not_positive")))
    elif units is not None:
        unit, factor = units
        duration *= factor
        limit = MAX_DAYS if unit == UNITS_DAYS else MAX_MONTHS
        if duration > limit:
            errors.append(FieldError(raw.name_of("duration"), "invalid_duration",
                                     Message("grants.duration_too_long", {"limit": limit, "units": unit})))

    if errors:
        return None, errors
    assert email is not None and term_id is not None and duration is not None and units is not None
    return GrantSpec(
        email=email, term_id=term_id, duration=duration, units=units[0],
        first_name=_text(raw.first_name, 100), last_name=_text(raw.last_name, 100),
        patronymic=_text(raw.patronymic, 100), phone=_text(raw.phone, 40),
    ), []
