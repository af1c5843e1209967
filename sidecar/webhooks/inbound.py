"""MemberLux's own webhooks as an event source (core.md §6).

MemberLux POSTs one payload object per activation, unsigned, while the activating request waits,
and its fan-out endpoint is public — anyone can make it send a forged payload. So:

* the path token is the only credential, compared in constant time;
* the answer is immediate (202) after storing the payload once per content hash;
* every payload is a **hint**: the worker confirms it in the database before acting — it looks the
  user up by e-mail and the key of the level, then announces the activation (``access.activated``,
  :mod:`sidecar.webhooks.access`), enrols on activation where a program says so, polls certificates at
  once (an ``auto`` level issues one at activation) and marks the level's sleepers for a rebuild.
  Nothing is ever granted or written to WordPress because of a payload.

Registration-path payloads carry the dates ``30-11--0001`` (ignored: dates are read from the
database). Unknown ``type`` values are stored and ignored, never an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sidecar.bootstrap import Runtime
from sidecar.domain.ids import MAX_ID, is_id, whole_number
from sidecar.domain.messages import Message
from sidecar.store.db import unit_of_work
from sidecar.store.webhook_models import InboundHint
from sidecar.webhooks.access import AccessAnnouncer

log = logging.getLogger(__name__)

KNOWN_TYPES = ("purchase", "free_item", "free_registration_form", "bulk_operations_reg", "bulk_operations_add",
               "auto_registration", "activation_page", "profile_page_self", "profile_page_admin",
               "after_auto_training_passed")
MAX_BODY = 64 * 1024
OUTCOME_LENGTH = 300        # mls_inbound_hints.outcome


class HintRejected(ValueError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Stored:
    hint_id: int
    duplicate: bool


def token_matches(runtime: Runtime, presented: str) -> bool:
    configured = runtime.settings.webhooks.memberlux_path_token
    if configured is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), configured.reveal().encode("utf-8"))


def parse(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise HintRejected(413, "too_large", f"payloads are at most {MAX_BODY} bytes")
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:  # ValueError: also a number of 4300+ digits
        raise HintRejected(400, "invalid_json", f"the body is not JSON ({str(exc)[:200]})") from None
    if isinstance(payload, dict) and isinstance(payload.get("actions"), list):
        # The loopback call's wrapper ({"actions": [...]}) if a site posts it here directly.
        payload = payload["actions"][0] if payload["actions"] else {}
    if not isinstance(payload, dict):
        raise HintRejected(400, "invalid_payload", "expected a JSON object (MemberLux webhook payload)")
    return payload


def _term_id(payload: dict[str, Any]) -> int | None:
    key = payload.get("key") if isinstance(payload.get("key"), dict) else {}
    raw = key.get("term_id")  # a string in MemberLux's payload
    number = whole_number(raw) if not isinstance(raw, float) else None
    if number is None or number <= 0:
        return None             # no level to confirm; the hint is kept all the same
    if not is_id(number):
        # No level has such an id, and the column cannot hold it (a 500 on MariaDB before).
        raise HintRejected(400, "invalid_term_id", f"key.term_id must be a positive integer (at most {MAX_ID})")
    return number


def store(runtime: Runtime, payload: dict[str, Any]) -> Stored:
    term_id = _term_id(payload)
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    now = runtime.clock.now()
    hint_type = str(payload.get("type") or "")[:60]
    email = str(payload.get("email") or "").strip()[:200]
    try:
        with unit_of_work(runtime.sessions) as session:
            hint = InboundHint(content_hash=digest, type=hint_type, email=email, term_id=term_id,
                               payload=payload, received_at=now)
            session.add(hint)
            session.flush()
            return Stored(hint.id, duplicate=False)
    except IntegrityError:
        with runtime.sessions() as session:
            found = session.scalar(sa.select(InboundHint.id).where(InboundHint.content_hash == digest))
        return Stored(int(found or 0), duplicate=True)


def process_hints(runtime: Runtime, limit: int = 200) -> dict[str, int]:
    """Confirm stored hints in the database and act on what is confirmed."""
    from sidecar.programs.progression import Progression

    with runtime.sessions() as session:
        hints = list(session.scalars(sa.select(InboundHint).where(InboundHint.processed_at.is_(None))
                                     .order_by(InboundHint.id).limit(limit)))
    counts = {"hints": len(hints), "confirmed": 0, "unconfirmed": 0, "ignored": 0, "enrolled": 0}
    if not hints:
        return counts
    progression = Progression(runtime)
    announcer = AccessAnnouncer(runtime)
    touched_users: set[int] = set()
    for hint in hints:
        outcome = _confirm(runtime, progression, announcer, hint, counts, touched_users)
        # Kept as a code with its values (the page words it); a message too long for the column (an odd
        # type name) keeps its English, cut, rather than a cut code nobody can read back.
        stored = outcome.stored()
        with unit_of_work(runtime.sessions) as session:
            session.execute(sa.update(InboundHint).where(InboundHint.id == hint.id)
                            .values(processed_at=runtime.clock.now(),
                                    outcome=stored if len(stored) <= OUTCOME_LENGTH else outcome.english()[:OUTCOME_LENGTH]))
    if touched_users:
        # The sleepers scan evaluates these learners again at its next run (they may have renewed),
        # whatever its digests say; and look for the auto certificate an activation issues.
        from sidecar.monitor.increments import hint_users

        hint_users(runtime, sorted(touched_users))
        progression.watch()
    return counts


def _confirm(runtime: Runtime, progression, announcer: AccessAnnouncer, hint: InboundHint, counts: dict[str, int],
             touched: set[int]) -> Message:
    if hint.type not in KNOWN_TYPES and hint.type != "":
        counts["ignored"] += 1
        return Message("inbound.unknown_type", {"type": repr(hint.type)})
    user = runtime.reader.user_by_email(hint.email) if hint.email else None
    if user is None or hint.term_id is None:
        counts["unconfirmed"] += 1
        return Message("inbound.no_user") if user is None else Message("inbound.no_level")
    rows = [r for r in runtime.reader.key_rows(user.id, [hint.term_id]) if (r.status or "new") != "new"]
    if not rows:
        counts["unconfirmed"] += 1
        return Message("inbound.no_key", {"user": user.id, "level": hint.term_id})
    counts["confirmed"] += 1
    touched.add(user.id)
    announcer.announce_hint(hint, user, rows)
    enrolled = 0
    from sidecar.store.program_models import Program, ProgramStep

    with runtime.sessions() as session:
        programs = list(session.scalars(
            sa.select(Program.id).join(ProgramStep, ProgramStep.program_id == Program.id)
            .where(Program.status == "active", Program.enrol_on_first_level.is_(True), ProgramStep.position == 0,
                   ProgramStep.term_id == hint.term_id)))
    for program_id in programs:
        enrolled += progression.enrol_on_activation(program_id, user.id, f"MemberLux webhook {hint.id}")
    counts["enrolled"] += enrolled
    if enrolled:
        return Message("inbound.confirmed_enrolled", {"user": user.id, "level": hint.term_id, "n": enrolled})
    return Message("inbound.confirmed", {"user": user.id, "level": hint.term_id})


def process_hints_job(runtime: Runtime) -> str:
    counts = process_hints(runtime)
    return ", ".join(f"{k} {v}" for k, v in counts.items())
