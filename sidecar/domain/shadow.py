"""What the legacy plugin did for a grant the bridge only watched (shadow mode; pure, no I/O).

In shadow mode the bridge records a request exactly as in live mode but sends no order: the old
plugin (ml-grant-bridge) still answers the CRM, and the worker compares what it wrote with what the
grant asked for. The old plugin writes one key row per request (legacy-plugins.md 1.6): it never
stamps a grant id, so a key is attributed by its owner (the user with the grant's e-mail, who may be
created by that very request), its activation time (``keys_meta.activation_datetime``, after the
request was received minus a small clock skew, and before the watch ends) and its level.

The outcome, once the watch window has passed:

* ``matched`` — exactly one such key of the grant's level, with its duration and units;
* ``legacy_extra`` — more than one key of the level was seen (a repeat the old plugin granted twice,
  including its same-day delete and insert: a key seen earlier that vanished counts);
* ``legacy_different`` — the one key of the level has another duration or units (or is unlimited),
  or the user got keys of other levels only;
* ``legacy_missing`` — no user with the e-mail, or no key of theirs in the window (the old plugin
  answered 200 and granted nothing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

#: Clocks of the sidecar, the database and PHP differ a little; a key this much older still counts.
SHADOW_CLOCK_SKEW = timedelta(minutes=2)


class ShadowOutcome(Enum):
    MATCHED = "matched"
    LEGACY_MISSING = "legacy_missing"
    LEGACY_DIFFERENT = "legacy_different"
    LEGACY_EXTRA = "legacy_extra"


@dataclass(frozen=True)
class Expected:
    """What the grant asked for."""

    term_id: int
    duration: int
    units: str
    received_at: datetime      # aware UTC


@dataclass(frozen=True)
class SeenKey:
    """A key of the grant's user as the watch saw it (``activated_at`` aware UTC)."""

    key_id: int
    term_id: int
    duration: int
    units: str
    is_unlimited: bool
    activated_at: datetime

    def same_term(self, expected: Expected) -> bool:
        return (not self.is_unlimited and self.duration == expected.duration
                and self.units == expected.units)


@dataclass(frozen=True)
class ShadowJudgement:
    outcome: ShadowOutcome
    reason: str
    key_ids: tuple[int, ...]


def in_window(key: SeenKey, expected: Expected, until: datetime) -> bool:
    """The key was activated after the request (less the clock skew) and before the watch ended."""
    return expected.received_at - SHADOW_CLOCK_SKEW <= key.activated_at <= until


def judge_shadow(expected: Expected, user_found: bool, seen: Iterable[SeenKey], until: datetime) -> ShadowJudgement:
    """The outcome of a finished watch; ``seen`` holds every key seen during it (also vanished ones)."""
    if not user_found:
        return ShadowJudgement(ShadowOutcome.LEGACY_MISSING, "no WordPress user with the grant's e-mail", ())
    keys = {key.key_id: key for key in seen if in_window(key, expected, until)}
    level = sorted((k for k in keys.values() if k.term_id == expected.term_id), key=lambda k: k.key_id)
    if len(level) > 1:
        return ShadowJudgement(ShadowOutcome.LEGACY_EXTRA, f"{len(level)} keys of level {expected.term_id} "
                               "since the request", tuple(k.key_id for k in level))
    if len(level) == 1:
        key = level[0]
        if key.same_term(expected):
            return ShadowJudgement(ShadowOutcome.MATCHED, f"key {key.key_id}", (key.key_id,))
        term = "unlimited" if key.is_unlimited else f"{key.duration} {key.units}"
        return ShadowJudgement(ShadowOutcome.LEGACY_DIFFERENT, f"key {key.key_id} is {term}, the request asked for "
                               f"{expected.duration} {expected.units}", (key.key_id,))
    others = sorted(keys)
    if others:
        levels = sorted({keys[i].term_id for i in others})
        return ShadowJudgement(ShadowOutcome.LEGACY_DIFFERENT, "keys of other levels only: "
                               + ", ".join(str(t) for t in levels), tuple(others))
    return ShadowJudgement(ShadowOutcome.LEGACY_MISSING, "no key of the user since the request", ())
