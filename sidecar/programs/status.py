"""What the program page, the API and ``mlsidecar programs status`` show: learners per step, who is
stalled, what waits, and one learner's timeline. Reads our store only (plus names from WordPress)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from sidecar.bootstrap import Runtime
from sidecar.domain.messages import Message, from_stored
from sidecar.programs.catalog import ProgramCatalog, ProgramView
from sidecar.store.monitor_models import CertificateClassRow
from sidecar.store.program_models import Enrolment, EnrolmentEvent, ProgramInbox

STALLED_AFTER_DAYS = 30


@dataclass(frozen=True)
class StepCount:
    position: int             # 1-based
    term_id: int
    level_name: str
    learners: int             # active learners on this step
    stalled: int              # of those, on it for longer than the threshold


@dataclass(frozen=True)
class Learner:
    enrolment_id: int
    user_id: int
    email: str
    name: str
    step: int                 # 1-based
    status: str
    since: date
    days_on_step: int
    source: str


@dataclass
class ProgramStatus:
    program: ProgramView
    steps: list[StepCount]
    completed: int
    withdrawn: int
    stalled: list[Learner] = field(default_factory=list)
    waiting: list[tuple[int, Message | str]] = field(default_factory=list)    # (certificate id, why)
    stalled_after_days: int = STALLED_AFTER_DAYS


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    kind: str
    step: int | None
    certificate_id: int | None
    grant_id: str | None
    detail: dict


def program_status(runtime: Runtime, program_id: int, *, stalled_after_days: int = STALLED_AFTER_DAYS,
                   stalled_limit: int = 200) -> ProgramStatus:
    program = ProgramCatalog(runtime).get(program_id)
    today = runtime.clock.today_utc()
    names = {level.term_id: level.name for level in runtime.reader.levels()}
    threshold = today - timedelta(days=stalled_after_days)
    e = Enrolment
    with runtime.sessions() as session:
        per_step = dict(session.execute(sa.select(e.current_step, sa.func.count()).where(
            e.program_id == program_id, e.status == "active").group_by(e.current_step)).all())
        stalled_per_step = dict(session.execute(sa.select(e.current_step, sa.func.count()).where(
            e.program_id == program_id, e.status == "active", e.step_since < threshold).group_by(e.current_step)).all())
        by_status = dict(session.execute(sa.select(e.status, sa.func.count()).where(e.program_id == program_id)
                                         .group_by(e.status)).all())
        stalled_rows = list(session.scalars(sa.select(e).where(
            e.program_id == program_id, e.status == "active", e.step_since < threshold)
            .order_by(e.step_since, e.id).limit(stalled_limit)))
        levels = sorted({step.term_id for step in program.definition.steps})
        waiting = [(int(r.certificate_id), from_stored(r.last_error)) for r in session.scalars(
            sa.select(ProgramInbox)
            .join(CertificateClassRow, CertificateClassRow.certificate_id == ProgramInbox.certificate_id)
            .where(ProgramInbox.attempts > 0, CertificateClassRow.level_id.in_(levels),
                   CertificateClassRow.user_id.in_(sa.select(e.user_id).where(e.program_id == program_id)))
            .order_by(ProgramInbox.certificate_id).limit(100))]
    users = runtime.reader.users([r.user_id for r in stalled_rows])
    steps = [StepCount(n + 1, s.term_id, names.get(s.term_id, f"#{s.term_id}"), int(per_step.get(n, 0)),
                       int(stalled_per_step.get(n, 0))) for n, s in enumerate(program.definition.steps)]
    stalled = [_learner(r, users.get(r.user_id), today) for r in stalled_rows]
    return ProgramStatus(program, steps, int(by_status.get("completed", 0)), int(by_status.get("withdrawn", 0)),
                         stalled, waiting, stalled_after_days)


def _learner(row: Enrolment, user, today: date) -> Learner:
    name = " ".join(p for p in ((user.first_name, user.last_name) if user else ()) if p)
    return Learner(row.id, row.user_id, user.email if user else "", name or (user.display_name if user else "(deleted)"),
                   row.current_step + 1, row.status, row.step_since, (today - row.step_since).days, row.source)


def learners(runtime: Runtime, program_id: int, *, step: int | None = None, status: str | None = None,
             after_id: int = 0, limit: int = 50) -> list[Learner]:
    """A page of a program's learners (keyset on the enrolment id)."""
    e = Enrolment
    stmt = sa.select(e).where(e.program_id == program_id, e.id > after_id).order_by(e.id).limit(limit)
    if step is not None:
        stmt = stmt.where(e.current_step == step - 1)
    if status is not None:
        stmt = stmt.where(e.status == status)
    with runtime.sessions() as session:
        rows = list(session.scalars(stmt))
    users = runtime.reader.users([r.user_id for r in rows])
    today = runtime.clock.today_utc()
    return [_learner(r, users.get(r.user_id), today) for r in rows]


def enrolments_of(runtime: Runtime, user_id: int) -> list[Enrolment]:
    with runtime.sessions() as session:
        return list(session.scalars(sa.select(Enrolment).where(Enrolment.user_id == user_id).order_by(Enrolment.id)))


def timeline(runtime: Runtime, enrolment_id: int) -> list[TimelineEvent]:
    with runtime.sessions() as session:
        if session.get(Enrolment, enrolment_id) is None:
            raise LookupError(f"no enrolment {enrolment_id}")
        return [TimelineEvent(r.at, r.kind, r.step, r.certificate_id or None, r.grant_id, r.detail or {})
                for r in session.scalars(sa.select(EnrolmentEvent).where(EnrolmentEvent.enrolment_id == enrolment_id)
                                         .order_by(EnrolmentEvent.at, EnrolmentEvent.id))]


def enrolment(runtime: Runtime, enrolment_id: int) -> Enrolment | None:
    """One enrolment (detached), for the learner's timeline page and the API."""
    with runtime.sessions() as session:
        return session.get(Enrolment, enrolment_id)


@dataclass(frozen=True)
class ProgramCounts:
    per_step: dict[int, int]      # 1-based step -> active learners on it
    completed: int
    withdrawn: int


def program_counts(runtime: Runtime) -> dict[int, ProgramCounts]:
    """Every program's learners per step and outcomes, in one grouped query (the programs list)."""
    e = Enrolment
    found: dict[int, ProgramCounts] = {}
    with runtime.sessions() as session:
        rows = session.execute(sa.select(e.program_id, e.status, e.current_step, sa.func.count())
                               .group_by(e.program_id, e.status, e.current_step)).all()
    for program_id, status, step, count in rows:
        counts = found.setdefault(int(program_id), ProgramCounts({}, 0, 0))
        if status == "active":
            counts.per_step[int(step) + 1] = counts.per_step.get(int(step) + 1, 0) + int(count)
        elif status in ("completed", "withdrawn"):
            found[int(program_id)] = ProgramCounts(
                counts.per_step, counts.completed + (int(count) if status == "completed" else 0),
                counts.withdrawn + (int(count) if status == "withdrawn" else 0))
    return found
