"""The shadow-mode report: how the legacy plugin's grants compare with the requests the bridge only watched.

Read from our store alone (the evidence was recorded when each watch ended): counts per outcome, grants
still being watched, and every mismatch with the request and the key rows seen. Shared by
``mlsidecar shadow report`` and the ``/admin/shadow`` page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.store.grant_models import MATCHED, SHADOW, SHADOW_OUTCOMES, SHADOWED, Grant

#: Mismatches listed at most (newest first); the counts always cover every grant.
MAX_MISMATCHES = 500


@dataclass(frozen=True)
class Mismatch:
    grant: Grant
    outcome: str
    reason: str
    keys: list[dict[str, Any]]      # the key rows the watch saw, as recorded


@dataclass(frozen=True)
class ShadowReport:
    since: datetime | None
    counts: dict[str, int]          # every outcome, zeros included
    watching: int                   # shadow grants whose window has not passed yet
    mismatches: list[Mismatch]
    more_mismatches: int            # left out beyond MAX_MISMATCHES

    @property
    def compared(self) -> int:
        return sum(self.counts.values())


def shadow_report(session: Session, since: datetime | None = None, limit: int = MAX_MISMATCHES) -> ShadowReport:
    """Shadow grants received at or after ``since`` (aware UTC; ``None`` = all)."""
    after = [Grant.created_at >= since] if since is not None else []
    found = dict(session.execute(sa.select(Grant.shadow_outcome, sa.func.count()).where(Grant.status == SHADOWED, *after)
                                 .group_by(Grant.shadow_outcome)).tuples().all())
    counts = {outcome: int(found.get(outcome, 0)) for outcome in SHADOW_OUTCOMES}
    watching = int(session.scalar(sa.select(sa.func.count()).select_from(Grant)
                                  .where(Grant.status == SHADOW, *after)) or 0)
    wrong = sa.and_(Grant.status == SHADOWED, Grant.shadow_outcome != MATCHED, *after)
    rows = list(session.scalars(sa.select(Grant).where(wrong).order_by(Grant.created_at.desc(), Grant.id.desc())
                                .limit(limit)))
    total_wrong = sum(n for outcome, n in counts.items() if outcome != MATCHED)
    return ShadowReport(since=since, counts=counts, watching=watching,
                        mismatches=[_mismatch(grant) for grant in rows], more_mismatches=max(0, total_wrong - len(rows)))


def _mismatch(grant: Grant) -> Mismatch:
    meta = grant.meta or {}
    result = meta.get("shadow_result") or {}
    seen = {int(k["key_id"]): k for k in (meta.get("shadow_watch") or {}).get("keys", [])}
    wanted = result.get("key_ids") or []
    keys = [seen[int(i)] for i in wanted if int(i) in seen] or list(seen.values())
    return Mismatch(grant=grant, outcome=grant.shadow_outcome or "", reason=str(result.get("reason") or ""), keys=keys)


def mismatch_record(item: Mismatch) -> dict[str, Any]:
    grant = item.grant
    return {"grant_id": grant.id, "received_at": grant.created_at.isoformat(), "channel": grant.channel,
            "external_id": grant.external_id, "amo_lead_id": grant.amo_lead_id, "email": grant.email,
            "term_id": grant.term_id, "duration": grant.duration, "units": grant.units, "user_id": grant.user_id,
            "outcome": item.outcome, "reason": item.reason, "keys": item.keys}
