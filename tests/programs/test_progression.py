"""Bundle programs end to end against the emulated site: a certificate for the current step grants the
next step through the bridge outbox and MemberLux's REST order endpoint — once, never twice."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from sidecar.bridge.outbox import GrantDeliverer
from sidecar.domain.programs import Counting, Step
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition, ProgramRejected
from sidecar.programs.progression import Progression
from sidecar.store.grant_models import Grant
from sidecar.store.program_models import Enrolment, EnrolmentEvent, ProgramInbox

YOGA, ENGLISH, TRAVEL, BUSINESS = 10, 7, 8, 9   # small site levels: 10 and 7 manual certificates, 9 auto


class World:
    def __init__(self, runtime, emulator) -> None:
        self.runtime = runtime
        self.base_url, self.user, self.password, self.engine = emulator
        self.catalog = ProgramCatalog(runtime)
        self.progression = Progression(runtime)
        CertificateClassifier(runtime).sync()   # the site's existing certificates are history, not news

    def program(self, *levels: int, counting: Counting = Counting.MANUAL, **extra) -> int:
        steps = tuple(Step(level, 1, "months") for level in levels)
        return self.catalog.create(ProgramDefinition(name="Программа", steps=steps, counting=counting, **extra),
                                   actor="test").id

    def learner(self) -> int:
        """A learner with no key of the program levels yet."""
        tk = sa.table("wp_memberlux_term_keys", sa.column("user_id"), sa.column("term_id"))
        with self.engine.connect() as conn:
            busy = set(conn.execute(sa.select(tk.c.user_id).where(tk.c.term_id.in_([YOGA, ENGLISH, TRAVEL]))).scalars())
        return next(u for u in range(2, 61) if u not in busy and self.runtime.reader.user(u)
                    and not self.runtime.reader.user(u).blocked)

    def certify(self, user_id: int, level: int) -> int:
        answer = requests.post(self.base_url + "/devstack/certificates", json={"user_id": user_id, "level_id": level},
                               auth=(self.user, self.password), timeout=10)
        assert answer.status_code in (200, 201), answer.text
        return int(answer.json()["certificate_id"])

    def watch(self):
        CertificateClassifier(self.runtime).sync()
        return self.progression.process_inbox()

    def deliver(self) -> None:
        deliverer = GrantDeliverer(self.runtime)
        while deliverer.run_once():
            pass

    def levels_of(self, user_id: int) -> list[int]:
        return sorted(r.term_id for r in self.runtime.reader.key_rows(user_id) if r.term_id in (YOGA, ENGLISH, TRAVEL, BUSINESS))

    def enrolment(self, enrolment_id: int) -> Enrolment:
        with self.runtime.sessions() as session:
            return session.get(Enrolment, enrolment_id)

    def events(self, enrolment_id: int) -> list[tuple[str, int | None, str]]:
        with self.runtime.sessions() as session:
            return [(e.kind, e.step, e.detail.get("reason", "")) for e in session.scalars(
                sa.select(EnrolmentEvent).where(EnrolmentEvent.enrolment_id == enrolment_id).order_by(EnrolmentEvent.id))]

    def grants(self) -> list[Grant]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(Grant).where(Grant.channel == "program").order_by(Grant.created_at)))


@pytest.fixture
def world(runtime, emulator) -> World:
    return World(runtime, emulator)


def test_a_step_in_years_is_granted_as_twelve_months_a_year(world):
    program = world.catalog.create(ProgramDefinition(
        name="Год английского", steps=(Step(YOGA, 1, "months"), Step(ENGLISH, 1, "years"))), actor="test").id
    learner = world.learner()
    enrolled = world.progression.enrol(program, learner, source="test", actor="admin", grant_first=True)
    world.deliver()
    world.certify(learner, YOGA)
    assert world.watch().advanced == 1
    world.deliver()
    [_first, second] = world.grants()
    assert (second.term_id, second.duration, second.units, second.status) == (ENGLISH, 12, "months", "succeeded")
    [key] = [r for r in world.runtime.reader.key_rows(learner) if r.term_id == ENGLISH]
    assert (key.duration, key.units) == (12, "months")
    assert world.enrolment(enrolled.enrolment_id).current_step == 1


def test_enrolment_can_grant_step_one_and_a_certificate_grants_the_next_step(world):
    program = world.program(YOGA, ENGLISH)
    learner = world.learner()
    enrolled = world.progression.enrol(program, learner, source="test", actor="admin", grant_first=True)
    assert enrolled.created and enrolled.grant_id
    world.deliver()
    assert world.levels_of(learner) == [YOGA]

    world.certify(learner, YOGA)
    report = world.watch()
    assert report.advanced == 1
    world.deliver()
    assert world.levels_of(learner) == [ENGLISH, YOGA]
    assert world.enrolment(enrolled.enrolment_id).current_step == 1
    [first, second] = world.grants()
    assert second.idempotency_key == f"program:enrolment:{enrolled.enrolment_id}:step:2"
    assert second.status == "succeeded" and second.term_id == ENGLISH and second.duration == 1

    world.certify(learner, ENGLISH)
    report = world.watch()
    assert report.completed == 1
    enrolment = world.enrolment(enrolled.enrolment_id)
    assert enrolment.status == "completed" and enrolment.completed_at is not None
    assert [kind for kind, _, _ in world.events(enrolled.enrolment_id)] == ["enrolled", "step_granted", "completed"]
    assert len(world.grants()) == 2


def test_repeated_and_duplicate_certificates_never_grant_again(world):
    program = world.program(YOGA, ENGLISH, TRAVEL)
    learner = world.learner()
    enrolment_id = world.progression.enrol(program, learner, source="test", actor="admin").enrolment_id
    first = world.certify(learner, YOGA)
    second = world.certify(learner, YOGA)        # issued twice by two coaches
    report = world.watch()
    assert report.advanced == 1 and report.ignored == {"other_level": 1}
    # Seen again (a rewrite, a rescan): still nothing more.
    from datetime import datetime, timezone

    with world.runtime.sessions.begin() as session:
        session.add_all([ProgramInbox(certificate_id=c, queued_at=datetime.now(timezone.utc)) for c in (first, second)])
    assert world.watch().advanced == 0
    assert len(world.grants()) == 1
    assert world.enrolment(enrolment_id).current_step == 1


def test_certificates_for_other_levels_are_ignored_with_a_reason(world):
    program = world.program(YOGA, ENGLISH, TRAVEL)
    learner = world.learner()
    enrolment_id = world.progression.enrol(program, learner, source="test", actor="admin").enrolment_id
    world.certify(learner, ENGLISH)              # out of order: the learner is on step 1
    report = world.watch()
    assert report.advanced == 0 and report.ignored == {"other_level": 1}
    assert world.events(enrolment_id)[-1] == ("ignored", 1, "other_level")
    assert world.grants() == []


def test_two_programs_sharing_a_level_each_advance_on_their_own_step(world):
    first = world.program(YOGA, ENGLISH)
    second = world.program(ENGLISH, TRAVEL)
    learner = world.learner()
    e1 = world.progression.enrol(first, learner, source="test", actor="admin").enrolment_id
    e2 = world.progression.enrol(second, learner, source="test", actor="admin").enrolment_id
    world.certify(learner, ENGLISH)
    report = world.watch()
    # Program 2 is on English: it advances. Program 1 is on Yoga: English does not count there.
    assert report.advanced == 1 and report.ignored == {"other_level": 1}
    assert world.enrolment(e1).current_step == 0 and world.enrolment(e2).current_step == 1


def test_auto_certificates_do_not_count_and_do_not_cascade(world):
    program = world.program(BUSINESS, ENGLISH, TRAVEL)          # step 1 on an auto level
    learner = world.learner()
    enrolment_id = world.progression.enrol(program, learner, source="test", actor="admin",
                                           grant_first=True).enrolment_id
    world.deliver()                               # the activation issues an auto certificate on level 9
    report = world.watch()
    assert report.ignored == {"auto_certificate": 1} and report.advanced == 0
    assert world.enrolment(enrolment_id).current_step == 0
    assert world.levels_of(learner) == [BUSINESS]


def test_counting_every_certificate_on_an_auto_level_is_refused(world):
    with pytest.raises(ProgramRejected) as caught:
        world.program(BUSINESS, ENGLISH, counting=Counting.ANY)
    assert any(p.field == "counting" and "cascade" in p.message for p in caught.value.problems)
    # The last step may be auto: nothing follows it.
    assert world.program(ENGLISH, BUSINESS, counting=Counting.ANY)


def test_a_restart_between_certificate_and_grant_loses_nothing(world):
    program = world.program(YOGA, ENGLISH)
    learner = world.learner()
    world.progression.enrol(program, learner, source="test", actor="admin")
    world.certify(learner, YOGA)
    CertificateClassifier(world.runtime).sync()   # recorded in the inbox ... then the process stops
    with world.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ProgramInbox)) == 1
    fresh = Progression(world.runtime)            # a new process
    assert fresh.process_inbox().advanced == 1
    world.deliver()
    assert ENGLISH in world.levels_of(learner)


def test_a_certificate_issued_before_the_step_began_does_not_count(world):
    program = world.program(YOGA, ENGLISH)
    learner = world.learner()
    certificate_id = world.certify(learner, YOGA)
    CertificateClassifier(world.runtime).sync()   # seen before the learner was enrolled
    from datetime import timedelta

    from sidecar.store.monitor_models import CertificateClassRow

    with world.runtime.sessions.begin() as session:
        session.execute(sa.delete(ProgramInbox))
        row = session.get(CertificateClassRow, certificate_id)
        row.create_date = row.create_date - timedelta(days=1)   # issued the day before
    enrolment_id = world.progression.enrol(program, learner, source="test", actor="admin").enrolment_id
    assert world.watch().certificates == 0
    assert world.enrolment(enrolment_id).current_step == 0


def test_enrolling_twice_changes_nothing_and_errors_are_named(world):
    program = world.program(YOGA, ENGLISH)
    learner = world.learner()
    first = world.progression.enrol(program, learner, source="test", actor="admin")
    again = world.progression.enrol(program, learner, source="test", actor="admin", grant_first=True)
    assert not again.created and again.enrolment_id == first.enrolment_id and again.grant_id is None
    with pytest.raises(LookupError, match="no WordPress user"):
        world.progression.enrol(program, "nobody@example.com", source="test", actor="admin")
    with pytest.raises(LookupError, match="no program 999"):
        world.progression.enrol(999, learner, source="test", actor="admin")


def test_activating_the_first_level_enrols_when_the_program_says_so(world):
    program = world.program(YOGA, ENGLISH, enrol_on_first_level=True)
    world.program(TRAVEL, ENGLISH)                      # the rule is off for this one
    assert world.progression.enrol_from_activations() == 0     # first look: starts at the newest key
    learner = world.learner()
    tk = sa.Table("wp_memberlux_term_keys", sa.MetaData(), autoload_with=world.engine)
    with world.engine.begin() as conn:
        next_id = conn.execute(sa.select(sa.func.max(tk.c.id))).scalar() + 1
        for offset, (level, status) in enumerate(((YOGA, "used"), (TRAVEL, "used"), (YOGA, "new"))):
            conn.execute(tk.insert().values(
                id=next_id + offset, term_id=level, user_id=learner if status == "used" else None, key=f"k{next_id + offset}",
                key_type="wpm_term_keys", status=status, sent=0, is_banned=0, duration=1, units="months",
                date_start="2026-11-24", date_end="2026-12-24", date_registered="2026-11-24 10:00:00", is_unlimited=0))
    assert world.progression.enrol_from_activations() == 1
    assert world.progression.enrol_from_activations() == 0
    with world.runtime.sessions() as session:
        [enrolment] = session.scalars(sa.select(Enrolment)).all()
    assert (enrolment.program_id, enrolment.user_id, enrolment.source) == (program, learner, "first_level")
    assert world.grants() == []                         # step 1 is not granted again


def test_a_step_without_a_product_is_warned_about_and_the_learner_waits_visibly(world):
    from sidecar.programs.status import program_status

    view = world.catalog.create(ProgramDefinition(
        name="P", steps=(Step(YOGA, 1, "months"), Step(ENGLISH, 2, "months"))), actor="test")
    assert any("no WooCommerce key product grants level 7 for 2 months" in w.message for w in view.warnings)
    assert [w.said.params for w in view.warnings if w.said.code == "programs.no_product"] == [
        {"level": ENGLISH, "duration": 2, "units": "months"}]
    learner = world.learner()
    enrolment_id = world.progression.enrol(view.id, learner, source="test", actor="admin").enrolment_id
    world.certify(learner, YOGA)
    report = world.watch()
    assert report.waiting == 1 and report.advanced == 0
    assert world.enrolment(enrolment_id).current_step == 0
    status = program_status(world.runtime, view.id)
    [(certificate_id, why)] = status.waiting
    assert why.code == "programs.step_waits" and why.params["step"] == 2
    assert "step 2 cannot be granted" in str(why) and "no WooCommerce mbl_key product" in str(why)
    assert world.watch().waiting == 1                      # still waiting, retried at every poll, never lost


def test_a_certificate_seen_before_the_enrolment_the_same_day_still_counts(world):
    """The switch-over case: certificate issued (and classified) while no enrolment existed yet."""
    program = world.program(YOGA, ENGLISH)
    learner = world.learner()
    world.certify(learner, YOGA)
    CertificateClassifier(world.runtime).sync()
    with world.runtime.sessions.begin() as session:
        session.execute(sa.delete(ProgramInbox))        # not queued: no program level at the time
    world.progression.enrol(program, learner, source="test", actor="admin")
    assert world.watch().advanced == 1


def test_a_burst_larger_than_a_batch_is_drained_in_one_poll(world):
    from datetime import datetime, timezone

    with world.runtime.sessions.begin() as session:     # certificates unknown to the store: dropped quickly
        session.add_all([ProgramInbox(certificate_id=10_000 + n, queued_at=datetime.now(timezone.utc))
                         for n in range(25)])
    report = world.progression.process_inbox(batch=10)
    assert report.certificates == 25
    with world.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ProgramInbox)) == 0
