"""Enrolments and the step-by-step progression driven by certificates.

The certificate classifier (:mod:`sidecar.monitor.certificates`) is the watcher: it reads the
certificates table by ``certificate_id`` (its only index) with a cursor that re-reads a recent
window, notices rows that appear out of order, are rewritten or deleted, and records each one's
class (manual/auto) once. When a certificate of a program level is new, restored or rewritten it
also puts its id in ``mls_program_inbox`` in the same transaction; :meth:`Progression.process_inbox`
drains that inbox. A certificate issued while the sidecar was down is simply found when it returns.

For each certificate and each active enrolment of its learner, in one store transaction:

* the decision (:func:`sidecar.domain.programs.decide`) uses the enrolment's **stored** step;
* the enrolment moves with a conditional update (``WHERE current_step = k``), so a certificate seen
  twice, a duplicate certificate, or two processors at once cannot move it twice;
* the next step's grant is added to the bridge outbox under the key ``program:enrolment:E:step:N``
  (unique), so the same step is never granted twice and a grant is never lost: it is stored with the
  decision or not at all, and the outbox delivers it through MemberLux's REST order endpoint (no key
  date is ever written by us — MemberLux stacks or starts the access itself);
* the timeline event, and the inbox row's removal.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from sidecar.bootstrap import Runtime
from sidecar.bridge.service import BridgeService, IntakeRejected, emit_accepted
from sidecar.domain.grants import GrantSpec
from sidecar.domain.messages import Message
from sidecar.domain.programs import Counting, EnrolmentStatus, Outcome, Step, decide, grant_key
from sidecar.memberlux.reader import WpUser
from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.monitor_models import CertificateClassRow, WatchState
from sidecar.webhooks.events import emit
from sidecar.store.program_models import Enrolment, EnrolmentEvent, Program, ProgramInbox, ProgramStep

log = logging.getLogger(__name__)

PRINCIPAL = "programs"
KEYS_CURSOR = "programs.first_level_keys"
WAITING_REASON_LENGTH = 500      # mls_program_inbox.last_error


def queue_recent_certificates(session: Any, user_id: int, term_id: int, since: date, now: Any) -> int:
    """Put the learner's certificates of ``term_id`` issued on or after ``since`` in the inbox.

    A certificate seen before the enrolment existed (e.g. issued during the switch-over from the
    legacy plugin, between its deactivation and the import) was classified without being queued;
    this gives it its turn. Older ones do not count for the step anyway."""
    rows = session.scalars(sa.select(CertificateClassRow.certificate_id).where(
        CertificateClassRow.user_id == user_id, CertificateClassRow.level_id == term_id,
        CertificateClassRow.deleted_at.is_(None), CertificateClassRow.create_date >= since))
    queued = 0
    for certificate_id in rows:
        session.merge(ProgramInbox(certificate_id=certificate_id, queued_at=now))
        queued += 1
    return queued


class EnrolmentRefused(ValueError):
    pass


@dataclass
class EnrolResult:
    enrolment_id: int
    created: bool                 # False: the learner was enrolled already (nothing changed)
    grant_id: str | None = None   # step 1's grant when the enrolment grants it


@dataclass
class ProcessReport:
    certificates: int = 0
    advanced: int = 0
    completed: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    waiting: int = 0              # kept in the inbox: the next step cannot be granted yet (e.g. no product)

    def summary(self) -> str:
        ignored = ", ".join(f"{k} {v}" for k, v in sorted(self.ignored.items())) or "none"
        return (f"{self.certificates} certificates: {self.advanced} steps granted, {self.completed} programs "
                f"completed, ignored {ignored}, waiting {self.waiting}")


def _program_steps(session: Any, program_id: int) -> list[Step]:
    return [Step(r.term_id, r.duration, r.units) for r in session.scalars(
        sa.select(ProgramStep).where(ProgramStep.program_id == program_id).order_by(ProgramStep.position))]


class Progression:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.bridge = BridgeService(runtime)

    # --- enrolment ----------------------------------------------------------------------------------

    def find_user(self, ref: int | str) -> WpUser:
        """A learner by WordPress user id, e-mail or login (a login may look like an e-mail: both are tried)."""
        reader = self.runtime.reader
        if isinstance(ref, int) or str(ref).isdecimal():
            user = reader.user(int(ref))
        else:
            user = reader.user_by_email(str(ref)) or reader.user_by_login(str(ref))
        if user is None:
            raise LookupError(f"no WordPress user {ref}")
        return user

    def enrol(self, program_id: int, user_ref: int | str, *, source: str, actor: str,
              grant_first: bool | None = None) -> EnrolResult:
        """Enrol a learner (idempotent: enrolling again changes nothing and says so)."""
        user = self.find_user(user_ref)
        now = self.runtime.clock.now()
        with self.runtime.sessions() as session:
            program = session.get(Program, program_id)
            if program is None:
                raise LookupError(f"no program {program_id}")
            if program.status != "active":
                raise EnrolmentRefused(f"program {program_id} is archived")
            steps = _program_steps(session, program_id)
            existing = session.scalar(sa.select(Enrolment).where(Enrolment.program_id == program_id,
                                                                 Enrolment.user_id == user.id))
            if existing is not None:
                return EnrolResult(existing.id, created=False)
            grant_first = program.grant_first_step if grant_first is None else grant_first
        grant = steps_audit = None
        if grant_first:
            grant, steps_audit = self._grant(user, steps[0], program_id=program_id, index=0)
        try:
            with unit_of_work(self.runtime.sessions) as session:
                enrolment = Enrolment(program_id=program_id, user_id=user.id, current_step=0,
                                      step_since=self.runtime.clock.today_utc(), status=EnrolmentStatus.ACTIVE.value,
                                      source=source, actor=actor[:120], enrolled_at=now, updated_at=now)
                session.add(enrolment)
                session.flush()
                session.add(EnrolmentEvent(enrolment_id=enrolment.id, at=now, kind="enrolled", step=1,
                                           detail={"source": source, "actor": actor}))
                grant_id = None
                queue_recent_certificates(session, user.id, steps[0].term_id, enrolment.step_since, now)
                if grant is not None:
                    self._add_grant(session, grant, steps_audit, enrolment.id, 0, now)
                    grant_id = grant.id
                audit.record(session, subject_type="enrolment", subject_id=str(enrolment.id), action="program.enrolled",
                             at=now, actor=actor, program_id=program_id, user_id=user.id, source=source,
                             grant_id=grant_id)
                enrolment_id = enrolment.id
        except IntegrityError:
            with self.runtime.sessions() as session:  # a concurrent enrolment of the same learner won
                existing = session.scalar(sa.select(Enrolment).where(Enrolment.program_id == program_id,
                                                                     Enrolment.user_id == user.id))
            if existing is None:
                raise
            return EnrolResult(existing.id, created=False)
        return EnrolResult(enrolment_id, created=True, grant_id=grant_id)

    def withdraw(self, enrolment_id: int, actor: str) -> bool:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            moved = session.execute(
                sa.update(Enrolment).where(Enrolment.id == enrolment_id, Enrolment.status == EnrolmentStatus.ACTIVE.value)
                .values(status=EnrolmentStatus.WITHDRAWN.value, updated_at=now)).rowcount
            if moved:
                session.add(EnrolmentEvent(enrolment_id=enrolment_id, at=now, kind="withdrawn", detail={"actor": actor}))
                audit.record(session, subject_type="enrolment", subject_id=str(enrolment_id),
                             action="program.withdrawn", at=now, actor=actor)
        return bool(moved)

    # --- "activating the first step's level enrols the learner" ---------------------------------------

    def enrol_from_activations(self, limit: int = 1000) -> int:
        """Enrol learners whose key of a program's first level appeared since the last look.

        Scans new key rows by id (the primary key) from a cursor that starts at the newest row when
        the scan first runs: switching the rule on enrols future learners, not the site's history.
        Codes generated in advance and activated later keep their old id; MemberLux's activation
        webhook (``/hooks/memberlux/…``) reports those.
        """
        with self.runtime.sessions() as session:
            rules = {}
            for program_id, term_id in session.execute(
                    sa.select(Program.id, ProgramStep.term_id).join(ProgramStep, ProgramStep.program_id == Program.id)
                    .where(Program.status == "active", Program.enrol_on_first_level.is_(True), ProgramStep.position == 0)):
                rules.setdefault(int(term_id), []).append(int(program_id))
            cursor = session.get(WatchState, KEYS_CURSOR)
        if not rules:
            return 0
        if cursor is None:
            self._save_cursor(self.runtime.reader.max_key_id())
            return 0
        rows = self.runtime.reader.keys_after(int(cursor.value), list(rules), limit)
        enrolled = 0
        for row in rows:
            if row.user_id is None or (row.status or "new") == "new" or row.is_banned:
                continue
            for program_id in rules.get(int(row.term_id or 0), []):
                enrolled += self.enrol_on_activation(program_id, int(row.user_id), f"key {row.key_id}")
        if rows:
            self._save_cursor(rows[-1].key_id)
        return enrolled

    def enrol_on_activation(self, program_id: int, user_id: int, evidence: str) -> int:
        try:
            result = self.enrol(program_id, user_id, source="first_level", actor=f"activation ({evidence})",
                                grant_first=False)  # the learner has step 1's level already
        except (LookupError, EnrolmentRefused):
            return 0
        return 1 if result.created else 0

    def _save_cursor(self, value: int) -> None:
        now = self.runtime.clock.now()
        with unit_of_work(self.runtime.sessions) as session:
            state = session.get(WatchState, KEYS_CURSOR)
            if state is None:
                session.add(WatchState(name=KEYS_CURSOR, value=value, updated_at=now))
            else:
                state.value, state.updated_at = value, now

    # --- grants -------------------------------------------------------------------------------------

    def _grant(self, user: WpUser, step: Step, *, program_id: int, index: int):
        """The grant of step ``index`` (0-based), checked against the site, not stored yet."""
        duration, units = step.as_ordered()
        spec = GrantSpec(email=user.email, term_id=step.term_id, duration=duration, units=units,
                         first_name=user.first_name, last_name=user.last_name)
        # The key names the enrolment, whose id a new enrolment gets in the same transaction.
        return self.bridge.internal_grant(spec, key="pending", channel="program", principal=PRINCIPAL,
                                          external_id="pending",
                                          meta={"program_id": program_id, "step": index + 1, "user_id": user.id})

    @staticmethod
    def _add_grant(session: Any, grant: Any, steps_audit: list, enrolment_id: int, step: int, now: Any) -> None:
        grant.idempotency_key = grant_key(enrolment_id, step)
        grant.external_id = grant.idempotency_key
        grant.meta = {**(grant.meta or {}), "enrolment_id": enrolment_id}
        session.add(grant)
        for action, details in steps_audit:
            audit.record(session, subject_type="grant", subject_id=grant.id, action=action, at=now, actor=PRINCIPAL,
                         **details)
        emit_accepted(session, grant)

    # --- progression --------------------------------------------------------------------------------

    def process_inbox(self, batch: int = 500, time_budget: float = 50.0) -> ProcessReport:
        """Drain the inbox in batches until it is empty or ``time_budget`` seconds are used.

        Certificates that wait (their next step cannot be granted yet) stay in the inbox; the drain
        moves past them, so they never block newer ones, and they are tried again at the next poll.
        """
        report = ProcessReport()
        started = time.monotonic()
        after = -1
        while time.monotonic() - started < time_budget:
            with self.runtime.sessions() as session:
                ids = list(session.scalars(sa.select(ProgramInbox.certificate_id)
                                           .where(ProgramInbox.certificate_id > after)
                                           .order_by(ProgramInbox.certificate_id).limit(batch)))
            for certificate_id in ids:
                report.certificates += 1
                self._process(certificate_id, report)
            if len(ids) < batch:
                break
            after = ids[-1]
        if report.certificates:
            log.info("programs: %s", report.summary())
        return report

    def watch(self) -> str:
        """The worker's certificate job: new certificates classified, then matched against enrolments.

        Polled every minute, mostly with nothing new, so the idle case is kept to a few statements:
        one reads the classifier's state and whether anything else has work (a program enrolling on
        activation, certificates waiting in the inbox), one reads the site's newest certificates,
        one compares them with the store. The other steps run only when that statement says so or
        the sync found news; a certificate queued by an enrolment made after that statement waits
        for the next poll."""
        from sidecar.monitor.certificates import CertificateClassifier

        classifier = CertificateClassifier(self.runtime)
        if classifier.available:
            with self.runtime.store_engine.connect() as conn:
                state = conn.execute(sa.select(*classifier.poll_columns(self.runtime.clock.now()),
                                               *self._poll_columns())).one()
                sync = classifier.sync(time_budget=30.0, reads=(conn, state))
            enrol_rules, inbox = bool(state.enrol_rules), bool(state.inbox)
        else:
            sync = classifier.sync(time_budget=30.0)
            enrol_rules = inbox = True
        enrolled = self.enrol_from_activations() if enrol_rules else 0
        news = inbox or enrolled or sync.new or sync.reclassified or sync.restored
        report = self.process_inbox() if news else ProcessReport()
        return f"{sync.summary()}; {enrolled} enrolled on activation; {report.summary()}"

    @staticmethod
    def _poll_columns() -> list[Any]:
        """Whether a program enrols on activation (keys to scan) and whether the inbox holds anything."""
        rules = (sa.select(Program.id).join(ProgramStep, ProgramStep.program_id == Program.id)
                 .where(Program.status == "active", Program.enrol_on_first_level.is_(True), ProgramStep.position == 0))
        return [sa.exists(rules).label("enrol_rules"), sa.exists(sa.select(ProgramInbox.certificate_id)).label("inbox")]

    def _process(self, certificate_id: int, report: ProcessReport) -> None:
        now = self.runtime.clock.now()
        today = self.runtime.clock.today_utc()
        with self.runtime.sessions() as session:
            cert = session.get(CertificateClassRow, certificate_id)
            enrolments = [] if cert is None else list(session.scalars(
                sa.select(Enrolment).where(Enrolment.user_id == cert.user_id,
                                           Enrolment.status == EnrolmentStatus.ACTIVE.value)))
            plans = []
            for enrolment in enrolments:
                program = session.get(Program, enrolment.program_id)
                steps = _program_steps(session, enrolment.program_id)
                if program is None or program.status != "active" or cert.level_id not in {s.term_id for s in steps}:
                    continue  # this certificate has nothing to do with that program
                decision = decide(
                    steps, Counting(program.counting), status=EnrolmentStatus(enrolment.status),
                    current_step=enrolment.current_step, certificate_level=cert.level_id, certificate_class=cert.cls,
                    deleted=cert.deleted_at is not None,
                    issued_before_step=cert.create_date is not None and cert.create_date < enrolment.step_since)
                plans.append((enrolment.id, enrolment.current_step, steps, decision))
        user = self.runtime.reader.user(cert.user_id) if cert is not None and plans else None
        waiting = False
        for enrolment_id, at_step, steps, decision in plans:
            if decision.outcome is Outcome.ADVANCE and user is None:
                self._ignore(enrolment_id, certificate_id, at_step, "user_deleted", now, report)
                continue
            if decision.outcome is Outcome.IGNORE:
                self._ignore(enrolment_id, certificate_id, at_step, decision.reason.value, now, report)
                continue
            try:
                self._advance(enrolment_id, at_step, steps, decision, certificate_id, user, now, today, report)
            except IntakeRejected as exc:
                waiting = True
                self._wait(certificate_id, at_step + 2, exc.message, now)
        if not waiting:
            with unit_of_work(self.runtime.sessions) as session:
                session.execute(sa.delete(ProgramInbox).where(ProgramInbox.certificate_id == certificate_id))
        else:
            report.waiting += 1

    def _advance(self, enrolment_id: int, at_step: int, steps: list[Step], decision: Any, certificate_id: int,
                 user: WpUser | None, now: Any, today: date, report: ProcessReport) -> None:
        grant = steps_audit = None
        if decision.outcome is Outcome.ADVANCE:
            assert user is not None
            grant, steps_audit = self._grant(user, steps[decision.next_step], program_id=0, index=decision.next_step)
        try:
            with unit_of_work(self.runtime.sessions) as session:
                enrolment = session.get(Enrolment, enrolment_id)
                values: dict[str, Any] = {"updated_at": now}
                if decision.outcome is Outcome.ADVANCE:
                    values.update(current_step=decision.next_step, step_since=today)
                else:
                    values.update(status=EnrolmentStatus.COMPLETED.value, completed_at=now)
                moved = session.execute(
                    sa.update(Enrolment).where(Enrolment.id == enrolment_id, Enrolment.current_step == at_step,
                                               Enrolment.status == EnrolmentStatus.ACTIVE.value)
                    .values(**values).execution_options(synchronize_session=False)).rowcount
                if moved != 1:
                    return  # another processor handled this enrolment a moment ago
                detail = {"completed_level": steps[at_step].term_id}
                if grant is not None:
                    grant.meta = {**grant.meta, "program_id": enrolment.program_id}
                    self._add_grant(session, grant, steps_audit, enrolment_id, decision.next_step, now)
                    detail["granted_level"] = steps[decision.next_step].term_id
                kind = "step_granted" if grant is not None else "completed"
                program = session.get(Program, enrolment.program_id)
                data = {"program_id": enrolment.program_id, "program_name": program.name if program else "",
                        "enrolment_id": enrolment_id, "user_id": enrolment.user_id, "completed_step": at_step + 1,
                        "completed_level": steps[at_step].term_id, "certificate_id": certificate_id,
                        "total_steps": len(steps)}
                if grant is not None:
                    granted = steps[decision.next_step]
                    granted_duration, granted_units = granted.as_ordered()
                    data.update(granted_step=decision.next_step + 1, granted_level=granted.term_id, grant_id=grant.id,
                                granted_duration=granted_duration, granted_units=granted_units)
                emit(session, f"program.{kind}", data, now, program_id=enrolment.program_id)
                session.add(EnrolmentEvent(enrolment_id=enrolment_id, at=now, kind=kind, certificate_id=certificate_id,
                                           step=(decision.next_step + 1) if grant is not None else at_step + 1,
                                           grant_id=grant.id if grant is not None else None, detail=detail))
                audit.record(session, subject_type="enrolment", subject_id=str(enrolment_id), action=f"program.{kind}",
                             at=now, actor=PRINCIPAL, certificate_id=certificate_id,
                             grant_id=grant.id if grant is not None else None, **detail)
        except IntegrityError:
            return  # the step's grant exists already: granted once, never twice
        if grant is not None:
            report.advanced += 1
        else:
            report.completed += 1

    def _ignore(self, enrolment_id: int, certificate_id: int, at_step: int, reason: str, now: Any,
                report: ProcessReport) -> None:
        report.ignored[reason] = report.ignored.get(reason, 0) + 1
        with unit_of_work(self.runtime.sessions) as session:
            seen = session.scalar(sa.select(EnrolmentEvent.id).where(
                EnrolmentEvent.enrolment_id == enrolment_id, EnrolmentEvent.certificate_id == certificate_id,
                EnrolmentEvent.kind == "ignored").limit(1))
            if seen is None:  # a certificate re-read after a rewrite is not a new fact worth a line
                session.add(EnrolmentEvent(enrolment_id=enrolment_id, at=now, kind="ignored",
                                           certificate_id=certificate_id, step=at_step + 1, detail={"reason": reason}))

    def _wait(self, certificate_id: int, step: int, detail: str, now: Any) -> None:
        why = Message("programs.step_waits", {"step": step, "detail": detail})
        stored = why.stored()
        while len(stored) > WAITING_REASON_LENGTH:   # the bridge's reason is cut, the message stays whole
            detail = detail[:len(detail) // 2]
            stored = Message("programs.step_waits", {"step": step, "detail": detail}).stored()
        with unit_of_work(self.runtime.sessions) as session:
            row = session.get(ProgramInbox, certificate_id)
            if row is not None:
                row.attempts += 1
                row.last_error = stored
        log.warning("programs: certificate %s waits: %s", certificate_id, why)
