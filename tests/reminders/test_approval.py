"""A safe first run: a level's reminders go out only once an administrator approved the level, after
reviewing what it would send — on its page or on the command line; revoking stops it again.

The school of ``tests/reminders/school.py`` approves the levels it sets up (a school that sends); these
tests start from levels that are not approved (``approved=False``), as every level of a new store is.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from sidecar.cli import cli
from sidecar.demo import reminders_banner
from sidecar.monitor.settings import Letter, MonitorSettings
from sidecar.reminders import approval
from sidecar.reminders.planner import ReminderPlanner
from sidecar.reminders.run import daily_job, run_reminders
from sidecar.reminders.sender import ReminderSender
from sidecar.store.models import AuditEvent
from sidecar.store.reminder_models import AwaitingReminder, Reminder, ReminderApproval, ReminderDigest
from sidecar.status import site_timezone
from sidecar.store.webhook_models import WebhookEndpoint, WebhookEvent

from tests.reminders.school import ADMIN_LOGIN, LEVEL, OTHER_LEVEL, Browser, rows

APP_CSS = (Path(__file__).resolve().parents[2] / "sidecar" / "web" / "static" / "app.css").read_text(encoding="utf-8")


def invoke(school, *args: str):
    return CliRunner().invoke(cli, list(args), obj={"settings": school.settings, "clock": school.clock},
                              catch_exceptions=False)


def audit(school, action: str) -> list[AuditEvent]:
    with school.runtime.sessions() as session:
        return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def awaiting(school) -> list[tuple[int, int, str]]:
    with school.runtime.sessions() as session:
        return [(r.user_id, r.step, r.email) for r in session.scalars(
            sa.select(AwaitingReminder).order_by(AwaitingReminder.user_id, AwaitingReminder.step))]


def state(school, term_id: int = LEVEL) -> approval.LevelApproval:
    with school.runtime.sessions() as session:
        return approval.status(session, term_id)


def two_sleepers(school) -> None:
    """Level 30's letters are set but not approved; Anna is due letter 1, Vera is blocked."""
    school.schedule(approved=False)
    school.learner(1, "anna@example.com", first="Анна")
    school.expired(1, days_ago=3)
    school.learner(2, "vera@example.com", first="Вера", blocked=True)
    school.expired(2, days_ago=3)


def _json(output: str) -> dict:
    return json.loads(output[output.index("{"):output.rindex("}") + 1])


def listed_at_on_page(page: str) -> tuple[str, str]:
    found = re.search(r'name="listed_at" value="([^"]+)">\s*<input type="hidden" name="letters" value="(\d+)"', page)
    assert found, "no approve form on the page"
    return found.group(1), found.group(2)


# --- a level that is not approved --------------------------------------------------------------------

def test_every_level_starts_not_approved_and_a_run_only_lists_what_it_would_send(school, smtp_server):
    _, _, inbox = smtp_server
    two_sleepers(school)
    with school.runtime.sessions() as session:   # someone listens for reminder.sent
        now = school.clock.now()
        session.add(WebhookEndpoint(name="crm", url="https://crm.example/hook", events=["reminder.sent"],
                                    secret="whsec_test", source="ui", created_at=now, updated_at=now))
        session.commit()
    assert not state(school).approved

    report = run_reminders(school.runtime)

    assert inbox.messages == [] and report.send.sent == 0
    assert rows(school, Reminder) == [] and rows(school, ReminderDigest) == []       # nothing recorded, nothing counts
    with school.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 0
    assert report.plan.unapproved == [LEVEL]
    assert report.plan.counts() == {"await": 1, "skip:blocked": 1}
    assert all(not item.recorded for item in report.plan.items)
    assert awaiting(school) == [(1, 1, "anna@example.com")]
    assert state(school).listed_letters == 1 and state(school).listed_at == school.clock.now()
    assert "not approved, nothing sent: level 30 (1 letter(s))" in report.summary()
    assert "mlsidecar remind approve --level T --letters N" in report.summary()

    approval.approve(school.runtime, LEVEL, actor="test", source="test", review=None)
    assert run_reminders(school.runtime).send.sent == 1                     # and now the event is there
    with school.runtime.sessions() as session:
        assert session.scalars(sa.select(WebhookEvent.type)).all() == ["reminder.sent"]


def test_each_run_replaces_the_list(school, smtp_server):
    two_sleepers(school)
    run_reminders(school.runtime)
    school.learner(3, "gleb@example.com")
    school.expired(3, days_ago=3)
    school.key(1, school.today - timedelta(days=1), school.today + timedelta(days=30))   # Anna renewed
    school.advance(days=1)                  # the next day's run (the read model is rebuilt for the new day)
    run_reminders(school.runtime)
    assert awaiting(school) == [(3, 1, "gleb@example.com")]
    assert state(school).listed_at == school.clock.now()


def test_the_daily_job_of_a_new_store_mails_nobody(school, smtp_server):
    _, _, inbox = smtp_server
    two_sleepers(school)
    summary = daily_job(school.runtime)
    assert inbox.messages == [] and rows(school, Reminder) == []
    assert "not approved, nothing sent" in summary and awaiting(school) == [(1, 1, "anna@example.com")]


def test_a_dry_run_configuration_keeps_no_list_either(school_factory, smtp_server):
    host, port, inbox = smtp_server
    school = school_factory(smtp=(host, port), dry_run=True)
    two_sleepers(school)
    daily_job(school.runtime)
    assert inbox.messages == [] and awaiting(school) == [] and state(school).listed_at is None


def test_a_letter_planned_before_the_rule_is_not_sent_for_a_level_that_is_not_approved(school, smtp_server):
    # As after the upgrade: the ledger holds a planned letter of a level nobody approved.
    _, _, inbox = smtp_server
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=3)
    ReminderPlanner(school.runtime).plan()
    with school.runtime.sessions() as session:
        session.execute(sa.update(ReminderApproval).values(approved_at=None))
        session.commit()
    report = ReminderSender(school.runtime).send_due()
    assert inbox.messages == [] and report.skipped == {"not_approved": 1}
    assert [(r.state, r.reason) for r in rows(school)] == [("skipped", "not_approved")]


# --- approving and revoking on the pages ----------------------------------------------------------------

def test_the_page_shows_what_would_go_out_and_approving_it_sends_with_the_next_run(school, smtp_server):
    _, _, inbox = smtp_server
    two_sleepers(school)
    school.schedule(term_id=OTHER_LEVEL, days=(None, None, None), admin_days=None)   # no letters: not listed
    run_reminders(school.runtime)
    web = Browser(school)

    overview = web.get("/reminders/approvals")
    assert 'data-level="30"' in overview and 'data-level="31"' not in overview
    assert "awaiting approval" in overview and "1 letter, listed" in overview
    page = web.get(f"/reminders/approvals/{LEVEL}")
    assert "anna@example.com" in page and "Анна Иванова" in page
    assert "Напоминание 1: Английский A1" in page                          # the subject, rendered for Anna
    assert "vera@example.com" not in page                                   # blocked: nothing would go to her
    assert ("On the command line: <code>mlsidecar remind --dry-run --level 30</code>, "
            "then <code>mlsidecar remind approve --level 30 --letters N</code>") in page
    assert "<th>Access ended</th>" in page and "(X)" not in page       # no unexplained letter in a column title
    assert "would have sent 1 letter of this level; it sent none" in page    # one letter: not "1 letter(s)"
    russian = web.get(f"/reminders/approvals/{LEVEL}?lang=ru")
    assert "<th>Доступ закончился</th>" in russian and "отправил бы 1 письмо этого уровня" in russian
    web.get("/reminders/approvals?lang=en")                                 # back to English (the choice is kept)

    listed_at, letters = listed_at_on_page(page)
    assert web.client.post(f"/reminders/approvals/{LEVEL}/approve",
                           data={"listed_at": listed_at, "letters": letters}).status_code == 403   # no CSRF token
    assert not state(school).approved
    response = web.post(f"/reminders/approvals/{LEVEL}/approve", data={"listed_at": listed_at, "letters": letters})
    assert response.status_code == 302
    assert any("Approved after reviewing 1 letter:" in f for f in web.flashes())

    approved = state(school)
    assert approved.approved and approved.approved_by == ADMIN_LOGIN and approved.approved_source == "web"
    assert approved.approved_letters == 1 and approved.approved_list_at == school.clock.now()
    [event] = audit(school, "reminders.approved")
    assert (event.actor, event.subject_type, event.subject_id) == (ADMIN_LOGIN, "monitor_level", "30")
    assert event.occurred_at == school.clock.now() and event.source_ip
    assert event.details["letters"] == 1 and event.details["source"] == "web"
    assert awaiting(school) == []
    assert f"by {ADMIN_LOGIN}" in web.get("/reminders/approvals")

    report = run_reminders(school.runtime)
    assert report.send.sent == 1 and [m["To"] for _, _, m in inbox.messages] == ["anna@example.com"]
    assert report.plan.unapproved == []


def test_the_page_refuses_a_list_it_did_not_show(school, smtp_server):
    two_sleepers(school)
    run_reminders(school.runtime)
    web = Browser(school)
    listed_at, letters = listed_at_on_page(web.get(f"/reminders/approvals/{LEVEL}"))
    school.advance(seconds=600)
    run_reminders(school.runtime)                                            # a newer list meanwhile
    web.post(f"/reminders/approvals/{LEVEL}/approve", data={"listed_at": listed_at, "letters": letters})
    assert any("changed since you opened it" in f for f in web.flashes())
    web.post(f"/reminders/approvals/{LEVEL}/approve", data={"letters": letters})
    assert any("must name the list it approves" in f for f in web.flashes())
    assert not state(school).approved and audit(school, "reminders.approved") == []


def test_the_page_explains_a_level_with_nothing_to_approve(school, smtp_server):
    school.schedule(approved=False)
    web = Browser(school)
    settings = web.get(f"/monitor/levels/{LEVEL}/settings")     # where the letters are set, the state shows
    assert 'data-approved="no"' in settings and f'href="/reminders/approvals/{LEVEL}"' in settings
    assert "No run has listed this level's letters yet" in web.get(f"/reminders/approvals/{LEVEL}")
    assert "nothing to approve" in web.get(f"/reminders/approvals/{OTHER_LEVEL}")
    web.post(f"/reminders/approvals/{OTHER_LEVEL}/approve",
             data={"listed_at": school.clock.now().isoformat(), "letters": "0"})
    assert any("Level 31 has no letter set: there is nothing to approve" in f for f in web.flashes())
    web.get("/reminders/approvals/999", status=404)


def test_revoking_on_the_page_stops_the_level_at_once(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule()                       # approved
    school.learner(1)
    school.expired(1, days_ago=3)
    ReminderPlanner(school.runtime).plan()  # letter 1 planned, not sent yet
    web = Browser(school)
    page = web.get(f"/reminders/approvals/{LEVEL}")
    assert "Approved by test" in page and "Revoke the approval" in page
    assert 'data-approved="yes"' in web.get(f"/monitor/levels/{LEVEL}/settings")

    assert web.post(f"/reminders/approvals/{LEVEL}/revoke").status_code == 302
    assert any("Approval revoked" in f and "(1 planned letter skipped)" in f for f in web.flashes())
    assert not state(school).approved
    assert [(r.state, r.reason) for r in rows(school)] == [("skipped", "not_approved")]
    [event] = audit(school, "reminders.approval_revoked")
    assert event.actor == ADMIN_LOGIN and event.details["skipped"] == 1 and event.details["approved_by"] == "test"
    run_reminders(school.runtime)
    assert inbox.messages == []

    web.post(f"/reminders/approvals/{LEVEL}/revoke")
    assert any("was not approved; nothing changed" in f for f in web.flashes())
    assert len(audit(school, "reminders.approval_revoked")) == 1


def test_a_held_digest_is_listed_to_the_administrator_address(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, None, None), admin_days=1)
    school.learner(1, "anna@example.com")
    school.expired(1, days_ago=3)
    run_reminders(school.runtime)                       # letter 1 goes out while the level is approved
    approval.revoke(school.runtime, LEVEL, actor="test", source="test")
    school.advance(days=1)
    report = run_reminders(school.runtime)
    assert report.plan.counts() == {"await": 1} and len(inbox.messages) == 1
    page = Browser(school).get(f"/reminders/approvals/{LEVEL}")
    row = re.search(r'<tr class="awaiting step-4".*?</tr>', page, re.S).group(0)
    assert "boss@school.example" in row and "Сводка: Английский A1" in row and "administrator digest" in row


def test_an_approval_stays_when_the_letters_are_edited(school, smtp_server):
    school.schedule()
    service = MonitorSettings(school.runtime)
    level = service.effective(LEVEL)
    service.save(type(level)(**{**level.__dict__, "letters": (Letter(3, "Новая тема", "<p>Текст</p>"),
                                                               *level.letters[1:])}), actor="boss")
    assert state(school).approved


# --- the command line ---------------------------------------------------------------------------------------

def test_the_dry_run_lists_the_letters_awaiting_approval_and_the_command_that_approves_them(school, smtp_server):
    two_sleepers(school)
    result = invoke(school, "remind", "--dry-run", "--level", "30")
    assert result.exit_code == 0, result.output
    anna = next(line for line in result.output.splitlines() if line.startswith("1 "))
    assert anna.split()[-3:] == ["await", "not_approved", "no"]
    assert ("level 30 Английский A1: not approved, so nothing of it is sent; 1 letter(s) await approval"
            in result.output)
    assert "mlsidecar remind approve --level 30 --letters 1" in result.output
    data = _json(invoke(school, "remind", "--dry-run", "--format", "json").output)
    assert data["unapproved"] == [LEVEL]


def test_approving_on_the_command_line_confirms_the_dry_runs_count(school, smtp_server):
    _, _, inbox = smtp_server
    two_sleepers(school)
    missing = CliRunner().invoke(cli, ["remind", "approve", "--level", "30"],
                                 obj={"settings": school.settings, "clock": school.clock})
    assert missing.exit_code == 2
    assert "it lists 1 letter(s) awaiting approval now), then give --letters 1" in missing.output
    wrong = CliRunner().invoke(cli, ["remind", "approve", "--level", "30", "--letters", "2"],
                               obj={"settings": school.settings, "clock": school.clock})
    assert wrong.exit_code == 1
    assert "now lists 1 letter(s) awaiting approval, not 2: look at `mlsidecar remind --dry-run --level 30`" in wrong.output
    assert not state(school).approved

    done = invoke(school, "remind", "approve", "--level", "30", "--letters", "1")
    assert done.exit_code == 0 and "level 30 approved with 1 letter(s) reviewed" in done.output
    approved = state(school)
    assert approved.approved_by.startswith("cli:") and approved.approved_source == "cli"
    assert approved.approved_letters == 1
    [event] = audit(school, "reminders.approved")
    assert event.actor.startswith("cli:") and event.details["letters"] == 1

    again = invoke(school, "remind", "approve", "--level", "30", "--letters", "1")
    assert again.exit_code == 0 and "already approved" in again.output
    assert len(audit(school, "reminders.approved")) == 1

    assert invoke(school, "remind").exit_code == 0
    assert [m["To"] for _, _, m in inbox.messages] == ["anna@example.com"]


def test_the_command_line_refuses_levels_with_nothing_to_approve(school, smtp_server):
    school.schedule(approved=False)
    obj = {"settings": school.settings, "clock": school.clock}
    no_letters = CliRunner().invoke(cli, ["remind", "approve", "--level", "31", "--letters", "0"], obj=obj)
    assert no_letters.exit_code == 1 and "level 31 has no letter configured: there is nothing to approve" in no_letters.output
    unknown = CliRunner().invoke(cli, ["remind", "approve", "--level", "999", "--letters", "0"], obj=obj)
    assert unknown.exit_code == 1 and "no access level 999" in unknown.output
    school.schedule(enabled=False, approved=False)
    off = CliRunner().invoke(cli, ["remind", "approve", "--level", "30", "--letters", "0"], obj=obj)
    assert off.exit_code == 1 and "monitoring is off for level 30" in off.output
    mixed = CliRunner().invoke(cli, ["remind", "--dry-run", "approve", "--level", "30"], obj=obj)
    assert mixed.exit_code == 2 and "give its options after it" in mixed.output
    assert audit(school, "reminders.approved") == []


def test_revoking_on_the_command_line(school, smtp_server):
    school.schedule()
    school.learner(1)
    school.expired(1, days_ago=3)
    ReminderPlanner(school.runtime).plan()
    done = invoke(school, "remind", "revoke", "--level", "30")
    assert done.exit_code == 0 and "approval revoked" in done.output and "1 planned letter(s) skipped" in done.output
    assert not state(school).approved
    [event] = audit(school, "reminders.approval_revoked")
    assert event.actor.startswith("cli:")
    again = invoke(school, "remind", "revoke", "--level", "30")
    assert again.exit_code == 0 and "was not approved; nothing changed" in again.output


# --- the demo ------------------------------------------------------------------------------------------------

def test_the_demo_banner_says_where_to_review_and_approve(school, smtp_server):
    school.schedule(approved=False)
    lines = "\n".join(reminders_banner(school.runtime, "http://127.0.0.1:8080"))
    assert "nothing is mailed for a level until it is approved (1 of 1 level(s) with letters wait)" in lines
    assert "http://127.0.0.1:8080/reminders/approvals" in lines
    assert "mlsidecar remind --dry-run --level 30, then mlsidecar remind approve --level 30 --letters N" in lines
    approval.approve(school.runtime, LEVEL, actor="test", source="test", review=None)
    assert "every level with letters is approved" in "\n".join(reminders_banner(school.runtime, "http://x"))


def _heading(page: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", page, re.S)
    assert found, "no heading"
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def test_the_russian_pages_agree_in_number_with_the_reminders_and_letters(school, smtp_server):
    two_sleepers(school)
    run_reminders(school.runtime)
    web = Browser(school)
    page = web.get(f"/reminders/approvals/{LEVEL}?lang=ru")
    assert _heading(page).endswith("» ждут одобрения")                # «Напоминания уровня …» — plural
    assert "Писем ждёт одобрения: 1" in page
    assert "ждут одобрения" in web.get("/reminders/approvals?lang=ru")
    listed_at, letters = listed_at_on_page(page)
    web.post(f"/reminders/approvals/{LEVEL}/approve", data={"listed_at": listed_at, "letters": letters})
    assert _heading(web.get(f"/reminders/approvals/{LEVEL}?lang=ru")).endswith("» одобрены")
    assert "одобрены" in web.get("/reminders/approvals?lang=ru")


def test_a_level_without_reminders_is_not_said_to_await_approval(school, smtp_server):
    school.schedule(approved=False)
    web = Browser(school)
    for lang, nothing, badge, awaiting_badge in (("en", "nothing to approve", "no reminders set", "awaiting approval"),
                                                 ("ru", "Одобрять нечего", "напоминания не настроены", "ждут одобрения")):
        page = web.get(f"/reminders/approvals/{OTHER_LEVEL}?lang={lang}")
        assert nothing in page
        assert _heading(page).endswith(badge) and awaiting_badge not in _heading(page)
        assert _heading(web.get(f"/reminders/approvals/{LEVEL}?lang={lang}")).endswith(awaiting_badge)


def test_the_approve_button_is_a_primary_button_and_e_mails_stay_whole(school, smtp_server):
    two_sleepers(school)
    run_reminders(school.runtime)
    page = Browser(school).get(f"/reminders/approvals/{LEVEL}")
    form = re.search(r'<form method="post" action="/reminders/approvals/30/approve" class="([^"]+)">', page)
    assert form and "actions" in form.group(1).split()      # app.css: .actions button — the app's primary button,
    assert re.search(r"^\.filters button, \.actions button \{[^}]*background: var\(--accent\)", APP_CSS, re.M)
    assert re.search(r"^\.actions \{[^}]*margin: 0 0 1rem", APP_CSS, re.M)   # with room before the count line
    assert '<table class="grid awaiting-list">' in page and '<td class="email">anna@example.com</td>' in page
    # as in the sleepers table: an address is not broken letter by letter on a narrow screen
    rule = re.search(r"^([^{}]*table\.grid\.awaiting-list td\.email[^{}]*)\{([^}]*)\}", APP_CSS, re.M)
    assert rule and "table.grid.sleepers td.email" in rule.group(1) and "white-space: nowrap" in rule.group(2)


def test_after_a_revoke_the_pages_say_so_and_when_the_next_list_comes(school, smtp_server):
    school.schedule()                       # approved
    school.learner(1, "anna@example.com")
    school.expired(1, days_ago=3)
    web = Browser(school)
    web.post(f"/reminders/approvals/{LEVEL}/revoke")
    zone = school.settings.schedule.timezone
    zone = str(site_timezone(school.runtime)[0]) if zone == "site" else zone
    at = school.settings.schedule.reminders_at.strftime("%H:%M")

    page = web.get(f"/reminders/approvals/{LEVEL}?lang=en")
    assert 'data-state="revoked"' in page and "No run has listed" not in page
    assert f"Approval was revoked by {ADMIN_LOGIN} on " in page and "nothing to approve yet" in page
    assert f"the worker's daily run at {at} ({zone}), or <code>mlsidecar remind --level {LEVEL}</code>" in page
    assert f"<code>mlsidecar remind --dry-run --level {LEVEL}</code>" in page
    assert 'action="/reminders/approvals/30/approve"' not in page
    overview = web.get("/reminders/approvals?lang=en")
    assert f"approval revoked by {ADMIN_LOGIN}" in overview and "no run has listed them yet" not in overview
    page = web.get(f"/reminders/approvals/{LEVEL}?lang=ru")
    assert f"Одобрение отозвано: {ADMIN_LOGIN}, " in page and f"в {at} ({zone})" in page
    assert "Ни один запуск ещё не составил" not in page
    assert "ни один запуск ещё не составил" not in web.get("/reminders/approvals?lang=ru")

    school.advance(seconds=60)
    run_reminders(school.runtime)                                            # the next run lists the letters
    page = web.get(f"/reminders/approvals/{LEVEL}?lang=en")
    assert 'data-state="awaiting"' in page and "revoked" not in page and "anna@example.com" in page
    assert "approval revoked" not in web.get("/reminders/approvals?lang=en")


def test_a_level_never_listed_names_the_daily_run_s_time_zone(school, smtp_server):
    school.schedule(approved=False)
    page = Browser(school).get(f"/reminders/approvals/{LEVEL}?lang=en")
    zone = school.settings.schedule.timezone
    zone = str(site_timezone(school.runtime)[0]) if zone == "site" else zone
    assert 'data-state="no-list"' in page and f"at {school.settings.schedule.reminders_at:%H:%M} ({zone};" in page


def test_an_address_that_is_not_a_level_id_answers_like_an_unknown_level(school, smtp_server):
    web = Browser(school)
    for url, ru in (("/reminders/approvals/999", "На сайте нет уровня 999"),
                    ("/reminders/approvals/abc", "По этому адресу страницы нет"),
                    ("/reminders/approvals/99999999999999999999", "По этому адресу страницы нет")):
        response = web.client.get(f"{url}?lang=ru")
        body = response.get_data(as_text=True)
        assert response.status_code == 404 and ru in body and "The requested URL was not found" not in body, url
    assert "There is no page at this address" in web.client.get("/reminders/approvals/abc?lang=en").get_data(as_text=True)
