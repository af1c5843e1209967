"""A reminders run end to end: the planner's decisions, the ledger, the letters a real SMTP server gets."""

from __future__ import annotations

from datetime import date, time, timedelta

import pytest
import sqlalchemy as sa

from sidecar.reminders.run import run_reminders
from sidecar.store.reminder_models import Reminder, ReminderDigest

LEVEL, OTHER_LEVEL = 30, 31  # the levels of the school fixture (tests/reminders/school.py)


def ledger(school) -> list[tuple]:
    with school.runtime.sessions() as session:
        return [(r.user_id, r.step, r.state, r.reason) for r in
                session.scalars(sa.select(Reminder).order_by(Reminder.user_id, Reminder.step))]


def test_a_due_letter_is_sent_once_with_content_and_headers(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1, "anna@example.com", first="Анна")
    x = school.expired(1, days_ago=3)
    report = run_reminders(school.runtime)
    assert report.send.sent == 1
    [(sender, recipients, message)] = inbox.messages
    assert recipients == ["anna@example.com"]
    assert message["Subject"] == "Напоминание 1: Английский A1"
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert "Здравствуйте, Анна!" in html and f"закончился {x.day} ноября 2026" in html
    assert "Здравствуйте, Анна!" in text
    unsubscribe = str(message["List-Unsubscribe"]).strip()  # long values are folded onto a new line
    assert unsubscribe.startswith("<https://side.example/unsubscribe/") and unsubscribe.endswith(">")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert unsubscribe[1:-1] in text
    assert ledger(school) == [(1, 1, "sent", "")]
    with school.runtime.sessions() as session:
        row = session.scalar(sa.select(Reminder))
    assert row.message_id == message["Message-ID"] and row.expired_on == x and row.to_address == "anna@example.com"

    again = run_reminders(school.runtime)
    assert again.send.sent == 0 and len(inbox.messages) == 1


def test_the_chain_follows_the_days_and_the_digest_follows_the_last_letter(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, 10, 30), admin_days=7)
    school.learner(1)
    school.expired(1, days_ago=0)
    sent_days = {}
    for offset in range(40):
        before = len(inbox.messages)
        run_reminders(school.runtime)
        for _, _recipients, message in inbox.messages[before:]:
            sent_days[message["Subject"]] = offset
        school.advance(days=1)
    assert sent_days == {"Напоминание 1: Английский A1": 3, "Напоминание 2: Английский A1": 10,
                         "Напоминание 3: Английский A1": 30, "Сводка: Английский A1": 37}
    digest = inbox.messages[-1][2]
    assert inbox.messages[-1][1] == ["boss@school.example"]
    assert "learner1@example.com" in digest.get_body(("html",)).get_content()
    assert "Не продлили: 1" in digest.get_body(("html",)).get_content()
    assert [s for _, s, state, _ in ledger(school) if state == "sent"] == [1, 2, 3, 4]


def test_renewal_between_two_steps_stops_the_chain_and_a_new_lapse_starts_a_new_one(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, 10, None), admin_days=None)
    school.learner(1)
    x = school.expired(1, days_ago=3)
    run_reminders(school.runtime)
    assert len(inbox.messages) == 1
    # Renewed on day 5 after expiry for 20 days: access again until X + 25.
    school.advance(days=2)
    school.key(1, school.today, school.today + timedelta(days=20))
    for _ in range(15):
        school.advance(days=1)
        run_reminders(school.runtime)
    assert len(inbox.messages) == 1, "no letter while the learner has access"
    # X' = X + 25 passed; 3 days later the new chain's first letter goes out.
    for _ in range(10):
        school.advance(days=1)
        run_reminders(school.runtime)
    assert len(inbox.messages) == 2 and inbox.messages[1][2]["Subject"].startswith("Напоминание 1")
    with school.runtime.sessions() as session:
        chains = sorted({(r.expired_on, r.step) for r in session.scalars(sa.select(Reminder))})
    assert chains[0] == (x, 1) and chains[-1][0] == x + timedelta(days=25)


def test_a_planned_letter_is_skipped_when_the_learner_renewed_before_it_went_out(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=3)
    from sidecar.reminders.planner import ReminderPlanner
    from sidecar.reminders.sender import ReminderSender

    ReminderPlanner(school.runtime).plan()
    school.key(1, school.today, school.today + timedelta(days=30))    # renewed minutes later
    report = ReminderSender(school.runtime).send_due()
    assert report.sent == 0 and report.skipped == {"renewed": 1}
    assert inbox.messages == [] and ledger(school) == [(1, 1, "skipped", "renewed")]


def test_manual_certificate_blocked_and_unsubscribed_learners_get_nothing(school, smtp_server):
    _, _, inbox = smtp_server
    from sidecar.reminders.unsubscribe import unsubscribe

    school.schedule()
    for user_id in (1, 2, 3, 4):
        school.learner(user_id, blocked=user_id == 2)
        school.expired(user_id, days_ago=3)
    school.manual_certificate(1)
    unsubscribe(school.runtime.sessions, 3, email="x", source="link", actor="learner", at=school.clock.now())
    report = run_reminders(school.runtime)
    assert report.send.sent == 1 and [m[1] for m in inbox.messages] == [["learner4@example.com"]]
    assert ledger(school) == [(2, 1, "skipped", "blocked"), (3, 1, "skipped", "unsubscribed"), (4, 1, "sent", "")]


def test_a_learner_who_unsubscribed_from_memberlux_letters_gets_no_reminder(school, smtp_server):
    from datetime import datetime

    from sidecar.reminders.planner import ReminderPlanner
    from sidecar.reminders.sender import ReminderSender

    _, _, inbox = smtp_server
    school.schedule()
    for user_id in (1, 2, 3, 4):
        school.learner(user_id)
        school.expired(user_id, days_ago=3)
    mailing = school.t("memberlux_user_mailing_list")
    with school.writer.begin() as conn:   # learner 1 left another level's sequence; 2 only finished one
        conn.execute(mailing.insert(), [
            {"user_id": 1, "term_id": OTHER_LEVEL, "mailing_datetime": datetime(2026, 1, 5, 10), "status": "unsubscribe"},
            {"user_id": 2, "term_id": LEVEL, "mailing_datetime": datetime(2026, 1, 5, 10), "status": "finish"},
        ])
    dry = ReminderPlanner(school.runtime).plan(dry_run=True)
    assert {(i.user_id, i.reason) for i in dry.items} == {(1, "memberlux_unsubscribed"), (2, ""), (3, ""), (4, "")}

    ReminderPlanner(school.runtime).plan()
    with school.writer.begin() as conn:   # learner 4 unsubscribes after the plan was made
        conn.execute(mailing.insert().values(user_id=4, term_id=LEVEL, mailing_datetime=datetime(2026, 2, 1, 9),
                                             status="unsubscribe"))
    report = ReminderSender(school.runtime).send_due()
    assert report.sent == 2 and report.skipped == {"memberlux_unsubscribed": 1}
    assert sorted(m[1][0] for m in inbox.messages) == ["learner2@example.com", "learner3@example.com"]
    assert ledger(school) == [(1, 1, "skipped", "memberlux_unsubscribed"), (2, 1, "sent", ""), (3, 1, "sent", ""),
                              (4, 1, "skipped", "memberlux_unsubscribed")]


def test_monitoring_off_or_empty_letters_plan_nothing(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(enabled=False)
    school.learner(1)
    school.expired(1, days_ago=3)
    report = run_reminders(school.runtime)
    assert report.plan.levels_off == [LEVEL, OTHER_LEVEL] and ledger(school) == []
    school.schedule(days=(None, None, None), admin_days=None)
    assert run_reminders(school.runtime).plan.items == [] and inbox.messages == []


def test_missed_days_send_only_the_latest_due_step_and_never_stale_ones(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, 10, 30), admin_days=None)
    school.learner(1)
    school.expired(1, days_ago=12)    # steps 1 and 2 both due; the worker was down
    school.learner(2)
    school.expired(2, days_ago=20)    # step 2 due 10 days ago: more than catch_up_days (7)
    report = run_reminders(school.runtime)
    assert report.send.sent == 1 and inbox.messages[0][2]["Subject"].startswith("Напоминание 2")
    assert ledger(school) == [(1, 1, "skipped", "superseded"), (1, 2, "sent", "")]
    too_late = [i for i in report.plan.items if i.user_id == 2]
    assert [(i.step, i.reason, i.recorded) for i in too_late] == [(2, "too_late", False)]


def test_a_dry_run_lists_every_chain_a_run_leaves_alone_as_too_late(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, 10, None), admin_days=None)
    school.learner(1)
    school.expired(1, days_ago=3)      # letter 1 due today
    school.learner(2)
    school.expired(2, days_ago=20)     # letter 2 due 10 days ago: more than catch_up_days (7)
    school.learner(3)
    school.expired(3, days_ago=400)    # access ended long before reminders were switched on
    dry = run_reminders(school.runtime, dry_run=True)
    assert sorted((i.user_id, i.step, i.action, i.reason, i.recorded) for i in dry.plan.items) == [
        (1, 1, "send", "", True), (2, 2, "skip", "too_late", False), (3, 2, "skip", "too_late", False)]
    assert dry.plan.counts() == {"send": 1, "skip:too_late": 2}
    assert "skip:too_late 2" in dry.summary()
    assert ledger(school) == [] and inbox.messages == []

    run_reminders(school.runtime)
    assert ledger(school) == [(1, 1, "sent", "")]   # what the dry run said: too-late chains are never recorded
    assert len(inbox.messages) == 1


def test_a_dry_run_does_not_list_an_old_chain_that_got_its_letters(school, smtp_server):
    school.schedule(days=(3, None, None), admin_days=None)
    school.learner(1)
    school.expired(1, days_ago=3)
    run_reminders(school.runtime)
    assert ledger(school) == [(1, 1, "sent", "")]
    school.advance(days=365)
    assert run_reminders(school.runtime, dry_run=True).plan.items == []


def test_a_planned_letter_left_unsent_past_the_catch_up_days_is_skipped_too_late(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, None, None), admin_days=None)
    school.learner(1)
    school.expired(1, days_ago=3)
    from sidecar.reminders.planner import ReminderPlanner
    from sidecar.reminders.sender import ReminderSender

    ReminderPlanner(school.runtime).plan()
    school.advance(days=8)             # a long outage: due 8 days ago, catch_up_days is 7
    report = ReminderSender(school.runtime).send_due()
    assert report.sent == 0 and report.skipped == {"too_late": 1}
    assert inbox.messages == [] and ledger(school) == [(1, 1, "skipped", "too_late")]


def test_dry_run_records_and_sends_nothing_and_can_look_ahead(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=1)
    assert run_reminders(school.runtime, dry_run=True).plan.items == []
    ahead = run_reminders(school.runtime, dry_run=True, day=school.today + timedelta(days=2))
    assert [(i.user_id, i.step, i.action) for i in ahead.plan.items] == [(1, 1, "send")]
    assert ledger(school) == [] and inbox.messages == []
    with pytest.raises(ValueError, match="only a dry run"):
        run_reminders(school.runtime, day=school.today + timedelta(days=2))


def test_expiry_is_a_utc_day_whatever_the_site_zone_says(school, smtp_server):
    """Moscow is UTC+3: at 01:00 Moscow on the 27th it is still the 26th in UTC, so the 3-day letter
    for access that ended on the 24th (UTC) waits until 00:00 UTC."""
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1)
    school.key(1, date(2026, 10, 25), date(2026, 11, 24))
    school.set_day(date(2026, 11, 26), time(22, 0))   # 01:00 on the 27th in Moscow
    run_reminders(school.runtime)
    assert inbox.messages == []
    school.set_day(date(2026, 11, 27), time(0, 5))
    run_reminders(school.runtime)
    assert len(inbox.messages) == 1


def test_program_tokens_and_renewal_link(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, None, None), admin_days=None,
                    renewal_url="https://school.example/renew/{{ level_id }}?u={{ user_id }}")
    school.learner(1)
    school.expired(1, days_ago=3)
    school.program(1, "Английский с нуля", [LEVEL, OTHER_LEVEL])
    from sidecar.monitor.settings import Letter, MonitorSettings
    from dataclasses import replace

    service = MonitorSettings(school.runtime)
    level = service.effective(LEVEL)
    service.save(replace(level, letters=(Letter(3, "[is_bundle_course] / [bundle_name]",
                                                "<p>{{ renewal_url }} {{ days_since_expiry }} {{ last_access_date }}</p>"),
                                         Letter(), Letter())), actor="test")
    run_reminders(school.runtime)
    message = inbox.messages[0][2]
    assert message["Subject"] == "да / Английский с нуля"
    body = message.get_body(("html",)).get_content()
    assert "https://school.example/renew/30?u=1 3 20 ноября 2026" in body


def test_a_digest_is_one_letter_per_level_and_day(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(1, None, None), admin_days=0)
    for user_id in (1, 2, 3):
        school.learner(user_id)
        school.expired(user_id, days_ago=1)
    run_reminders(school.runtime)    # three letters, then the digest the same day (M = 0)
    run_reminders(school.runtime)
    subjects = [m[2]["Subject"] for m in inbox.messages]
    assert subjects.count("Сводка: Английский A1") == 1 and len(subjects) == 4
    with school.runtime.sessions() as session:
        [digest] = session.scalars(sa.select(ReminderDigest)).all()
    assert digest.learners == 3 and digest.state == "sent"


@pytest.mark.mariadb
def test_the_chain_on_a_mariadb_site(school_factory, smtp_server, mariadb_database):
    """The same run against MemberLux tables on MariaDB (the store stays SQLite)."""
    host, port, inbox = smtp_server
    school = school_factory(site_url=mariadb_database, smtp=(host, port))
    school.schedule(days=(3, 10, None), admin_days=None)
    school.learner(1, "anna@example.com")
    school.expired(1, days_ago=3)
    school.learner(2)
    school.expired(2, days_ago=3)
    school.manual_certificate(2)
    run_reminders(school.runtime)
    assert [m[1] for m in inbox.messages] == [["anna@example.com"]]
    school.advance(days=7)
    run_reminders(school.runtime)
    assert [m[2]["Subject"] for m in inbox.messages] == ["Напоминание 1: Английский A1", "Напоминание 2: Английский A1"]
