"""The reminder chain of each sleeper on a page of the list, read in one batch for the whole page.

A page costs the same few reads whatever its size: the ledger rows of the page's users, the
unsubscribes among them (ours and MemberLux's), the approved levels and the settings of the levels on
the page. :func:`sidecar.domain.reminder_chain.chain_status` then decides each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from sidecar.domain.reminder_chain import ChainEntry, ChainStatus, Learner, chain_status
from sidecar.domain.reminders import LEARNER_STEPS, State

if TYPE_CHECKING:
    from sidecar.bootstrap import Runtime

__all__ = ["Chain", "ChainKey", "chains_of"]

#: ``(user_id, term_id, expired_on)``: one chain of the ledger.
ChainKey = tuple[int, int, date]

_BATCH = 500


@dataclass(frozen=True)
class Chain:
    sent: int                 # learner letters sent in the chain
    status: ChainStatus | None  # None when only the count was asked for


@dataclass(frozen=True)
class _Row:
    user_id: int
    term_id: int
    expired_on: date
    blocked: bool
    email: str


def _ledger(session: Session, user_ids: Sequence[int]) -> dict[ChainKey, dict[int, ChainEntry]]:
    from sidecar.reminders.planner import _sent_on
    from sidecar.store.reminder_models import Reminder

    r = Reminder
    found: dict[ChainKey, dict[int, ChainEntry]] = {}
    for start in range(0, len(user_ids), _BATCH):
        stmt = (sa.select(r.user_id, r.term_id, r.expired_on, r.step, r.state, r.reason, r.due_on, r.sent_at,
                          r.data_started_at)
                .where(r.user_id.in_(user_ids[start:start + _BATCH]), r.step.in_(LEARNER_STEPS)))
        for row in session.execute(stmt):
            found.setdefault((int(row.user_id), int(row.term_id), row.expired_on), {})[int(row.step)] = ChainEntry(
                State(row.state), row.due_on, _sent_on(row.state, row.sent_at, row.data_started_at), row.reason or "")
    return found


def chains_of(runtime: Runtime, session: Session, rows: Sequence, today: date, *,
              with_status: bool) -> dict[ChainKey, Chain]:
    """The chain of each row (anything with ``user_id``, ``term_id``, ``expired_on``, ``blocked``, ``email``).

    Without ``with_status`` only the letters sent are counted (one ledger read), as the exports need.
    """
    from sidecar.monitor.settings import EMAIL_PATTERN, MonitorSettings
    from sidecar.reminders.approval import approved_levels
    from sidecar.reminders.planner import schedule_of
    from sidecar.reminders.unsubscribe import unsubscribed_ids

    wanted = [_Row(int(e.user_id), int(e.term_id), e.expired_on, bool(e.blocked), e.email or "") for e in rows]
    user_ids = sorted({w.user_id for w in wanted})
    ledger = _ledger(session, user_ids) if user_ids else {}

    def sent(key: ChainKey) -> int:
        return sum(1 for e in ledger.get(key, {}).values() if e.state is State.SENT)

    if not with_status or not wanted:
        return {(w.user_id, w.term_id, w.expired_on): Chain(sent((w.user_id, w.term_id, w.expired_on)), None)
                for w in wanted}
    monitor_settings = MonitorSettings(runtime)
    levels = {t: monitor_settings.effective(t) for t in sorted({w.term_id for w in wanted})}
    approved = approved_levels(session)
    ours = unsubscribed_ids(session, user_ids)
    theirs = runtime.reader.mailing_unsubscribed_ids(user_ids)
    catch_up = runtime.settings.reminders.catch_up_days
    chains: dict[ChainKey, Chain] = {}
    for w in wanted:
        key = (w.user_id, w.term_id, w.expired_on)
        settings = levels[w.term_id]
        learner = Learner(blocked=w.blocked, unsubscribed=w.user_id in ours,
                          memberlux_unsubscribed=w.user_id in theirs, has_email=bool(EMAIL_PATTERN.match(w.email)))
        status = chain_status(schedule_of(settings), w.expired_on, today, ledger.get(key, {}),
                              level_on=settings.enabled, approved=w.term_id in approved, learner=learner,
                              catch_up_days=catch_up)
        chains[key] = Chain(sent(key), status)
    return chains
