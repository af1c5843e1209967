"""The worker's certificate poll with nothing new costs a fixed, small number of statements.

Polled every minute against a certificates table of a million rows, the idle poll is what the store and
the site pay all day: one statement on the store reads the classifier's state and whether anything else
has work, one on the site reads its newest certificates, one on the store compares them with what it
holds. Counted as statements and connections (each connection is a pool ping and a rollback more on
MariaDB), on a SQLite and on a MariaDB store; the figures in time live in bench/programs.py.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.clock import FixedClock
from sidecar.domain.programs import Step
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.programs.catalog import ProgramCatalog, ProgramDefinition
from sidecar.programs.progression import Progression
from sidecar.store.program_models import Enrolment
from tests.stores import migrate_store

YOGA, ENGLISH = 10, 7                     # manual-certificate levels of the small site
START = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def runtime(store_section, small_site, settings_for):
    settings = settings_for(small_site, store=store_section)
    migrate_store(store_url(settings))
    built = build_runtime(settings, clock=FixedClock(START))
    CertificateClassifier(built).sync()   # the site's certificates so far are history
    yield built
    built.close()


@contextmanager
def counted(runtime):
    """Statements executed and connections checked out during the block, per database."""
    counts: Counter[str] = Counter()
    hooks = []
    for name, engine in (("site", runtime.wp_engine), ("store", runtime.store_engine)):
        def statement(*_args, name=name) -> None:
            counts[f"{name} statements"] += 1

        def checkout(*_args, name=name) -> None:
            counts[f"{name} connections"] += 1

        hooks += [(engine, "before_cursor_execute", statement), (engine.pool, "checkout", checkout)]
    for target, event, hook in hooks:
        sa.event.listen(target, event, hook)
    try:
        yield counts
    finally:
        for target, event, hook in hooks:
            sa.event.remove(target, event, hook)


def idle_poll(runtime) -> Counter[str]:
    runtime.clock.instant += timedelta(minutes=1)
    with counted(runtime) as counts:
        summary = Progression(runtime).watch()
    assert summary.startswith("0 new, 0 reclassified, 0 deleted, 0 restored")
    assert "; 0 certificates:" in summary
    return counts


def certify(site_url: str, user_id: int, level: int) -> None:
    """A certificate issued by hand in WordPress (written as MemberLux would; the sidecar only reads)."""
    engine = sa.create_engine(site_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO wp_memberlux_certificate (user_id, wpmlevel_id, certificate_name, certificate_template_id,"
            " graduate_first_name, graduate_last_name, date_issue, series, number, responsible_person, create_date,"
            " course_name) VALUES (:user, :level, 'Certificate', 1, 'Ann', 'Lee', '2026-11-24', 'T', 'N1', 3,"
            " '2026-11-24', 'Course')"), {"user": user_id, "level": level})
    engine.dispose()


def program(runtime, **extra) -> int:
    steps = (Step(YOGA, 1, "months"), Step(ENGLISH, 1, "months"))
    return ProgramCatalog(runtime).create(ProgramDefinition(name="Two steps", steps=steps, **extra), actor="test").id


MINIMUM = {"store connections": 1, "store statements": 2, "site connections": 1, "site statements": 1}


def test_an_idle_poll_is_one_site_statement_and_two_store_statements(runtime):
    program(runtime)
    Progression(runtime).watch()
    assert idle_poll(runtime) == MINIMUM


def test_a_program_enrolling_on_activation_adds_the_key_scan_only(runtime):
    program(runtime, enrol_on_first_level=True)
    Progression(runtime).watch()
    assert idle_poll(runtime) == {"store connections": 2, "store statements": 4,
                                  "site connections": 2, "site statements": 2}


def test_without_programs_the_poll_is_as_small(runtime):
    Progression(runtime).watch()
    assert idle_poll(runtime) == MINIMUM


def test_a_certificate_after_idle_polls_still_moves_the_learner_and_the_poll_stays_small(runtime, small_site):
    program_id = program(runtime)
    progression = Progression(runtime)
    learner = next(u for u in range(4, 61) if runtime.reader.user(u) and not runtime.reader.user(u).blocked
                   and not [k for k in runtime.reader.key_rows(u) if k.term_id in (YOGA, ENGLISH)])
    enrolment = progression.enrol(program_id, learner, source="cli", actor="test", grant_first=False).enrolment_id
    progression.watch()
    assert idle_poll(runtime) == MINIMUM

    certify(small_site, learner, YOGA)
    runtime.clock.instant += timedelta(minutes=1)
    assert "1 new" in progression.watch()
    with runtime.sessions() as session:
        assert session.get(Enrolment, enrolment).current_step == 1
    # The new certificate is re-read for a while (ids can appear out of order); still no writes.
    assert idle_poll(runtime) == MINIMUM
