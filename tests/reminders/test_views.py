"""The reminders' web pages: history, failed sends and resend, digests, unsubscribes, the learner's
unsubscribe page, and the letter preview and test send of the per-level settings.

Every test runs against the school of ``tests/reminders/school.py`` (a real MemberLux schema, a real SMTP server)
with an administrator signed in through the real login form.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa

from sidecar.app import create_app
from sidecar.bootstrap import build_runtime
from sidecar.config import settings_from_mapping
from sidecar.monitor.settings import MonitorSettings
from sidecar.reminders.planner import ReminderPlanner
from sidecar.reminders.run import run_reminders
from sidecar.reminders.sender import ReminderSender, links_for
from sidecar.reminders.unsubscribe import unsubscribe
from sidecar.store.models import AuditEvent
from sidecar.store.reminder_models import Reminder, ReminderDigest, Unsubscribe

from tests.reminders.school import ADMIN_LOGIN, LEVEL, OTHER_LEVEL, Browser, a_sleeper, rows, settings_form


def audit(school, action: str) -> list[AuditEvent]:
    with school.runtime.sessions() as session:
        return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def table_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="reminder [^"]*" data-id="(\d+)"', page)]


def chip(page: str, label: str) -> int:
    found = re.search(rf'class="chip[^"]*"[^>]*>{re.escape(label)} <span class="count">(\d+)</span>', page)
    assert found, label
    return int(found.group(1))


def sent_and_skipped(school) -> None:
    """Learners 1 and 2 got letter 1; learner 3 is blocked (skipped); learner 4 sleeps on the other level."""
    school.schedule()
    school.schedule(term_id=OTHER_LEVEL, admin_days=None)
    school.learner(1, "anna@example.com", first="Анна")
    school.learner(2, "boris@example.com", first="Борис", last="Петров")
    school.learner(3, "vera@example.com", first="Вера", blocked=True)
    school.learner(4, "gleb@example.com", first="Глеб")
    for user_id in (1, 2, 3):
        school.expired(user_id, days_ago=3)
    school.expired(4, days_ago=3, term_id=OTHER_LEVEL)
    run_reminders(school.runtime)


# --- history -----------------------------------------------------------------------------------------

def test_history_shows_every_ledger_row_with_counts_per_state(web, school):
    sent_and_skipped(school)
    page = web.get("/reminders")
    assert len(table_ids(page)) == 4
    assert chip(page, "All") == 4 and chip(page, "sent") == 3 and chip(page, "skipped") == 1 and chip(page, "failed") == 0
    anna = next(r for r in rows(school) if r.user_id == 1)
    row = re.search(rf'<tr class="reminder[^"]*" data-id="{anna.id}".*?</tr>', page, re.S).group(0)
    assert 'href="/monitor/users/1"' in row and "anna@example.com" in row and "Английский A1" in row
    assert anna.expired_on.isoformat() in row and anna.due_on.isoformat() in row
    assert anna.message_id in row and "sent" in row
    assert "UTC" in row and "Europe/Moscow" in page                      # site-local time, UTC beneath
    assert "account blocked in MemberLux" in page                        # the reason, in words
    assert 'href="/reminders"' in web.get("/monitor")                      # in the navigation


def test_history_filters_by_level_user_state_step_and_dates(web, school):
    sent_and_skipped(school)
    by_user = {r.user_id: r.id for r in rows(school)}
    assert set(table_ids(web.get(f"/reminders?level={OTHER_LEVEL}"))) == {by_user[4]}
    assert table_ids(web.get("/reminders?user=2")) == [by_user[2]]
    assert table_ids(web.get("/reminders?user=BORIS@example")) == [by_user[2]]
    assert set(table_ids(web.get("/reminders?state=skipped"))) == {by_user[3]}
    assert set(table_ids(web.get("/reminders?step=1"))) == set(by_user.values())
    assert table_ids(web.get("/reminders?step=digest")) == []
    today = school.today.isoformat()
    assert len(table_ids(web.get(f"/reminders?planned_from={today}&planned_to={today}"))) == 4
    assert len(table_ids(web.get(f"/reminders?sent_from={today}&sent_to={today}"))) == 3
    tomorrow = (school.today + timedelta(days=1)).isoformat()
    assert table_ids(web.get(f"/reminders?sent_from={tomorrow}")) == []
    page = web.get("/reminders?state=skipped&level=30")
    assert chip(page, "sent") == 2 and chip(page, "skipped") == 1           # the counts follow the other filters


def test_history_finds_a_learner_by_login_through_the_sleepers_read_model(web, school):
    sent_and_skipped(school)
    ids = table_ids(web.get("/reminders?user=learner2"))
    assert [r.user_id for r in rows(school) if r.id in ids] == [2]


def test_unusable_filters_are_dropped_and_explained(web, school):
    sent_and_skipped(school)
    page = web.get("/reminders?planned_from=24.11.2026&level=999&state=lost&step=7&after=xyz&limit=0")
    for text in ("Not a date in planned_from: 24.11.2026", "There is no level 999 on the site",
                 "Unknown state: lost", "Unknown letter: 7", "The page link is not valid",
                 "Rows per page must be a number from 1 to 200, not 0"):
        assert text in page, text
    assert len(table_ids(page)) == 4                                     # shown unfiltered
    page = web.get("/reminders?sent_from=2026-11-30&sent_to=2026-11-01")
    assert "sent_to (2026-11-01) is before the start of the range" in page


def test_history_pages_newest_first_without_repeats(web, school):
    sent_and_skipped(school)
    seen: list[int] = []
    url = "/reminders?limit=1"
    while url:
        page = web.get(url)
        assert "Letters found: 4" in page
        seen += table_ids(page)
        found = re.search(r'<a href="([^"]+)" class="next"', page)
        url = found.group(1) if found else None
    assert seen == sorted(seen, reverse=True) and len(seen) == 4 == len(set(seen))


def test_admin_pages_need_a_login(school):
    client = create_app(school.runtime, testing=True).test_client()
    for url in ("/reminders", "/reminders/digests", "/reminders/unsubscribes", f"/reminders/levels/{LEVEL}/preview"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"], url


# --- failed sends -------------------------------------------------------------------------------------

def failed_letters(school, smtp_server, users=(1, 2)) -> list[Reminder]:
    _, _, inbox = smtp_server
    school.schedule(admin_days=None)
    for user_id in users:
        school.learner(user_id)
        school.expired(user_id, days_ago=3)
    inbox.fail_with = (550, "5.1.1 mailbox unavailable")
    run_reminders(school.runtime)
    inbox.fail_with = None
    failed = rows(school)
    assert [r.state for r in failed] == ["failed"] * len(users)
    return failed


def test_failed_sends_can_be_resent_one_by_one_and_audited(web, school, smtp_server):
    first, second = failed_letters(school, smtp_server)
    page = web.get("/reminders?state=failed")
    assert "refused by the mail server" in page and "mailbox unavailable" in page
    assert f'name="one" value="{first.id}"' in page and f'name="id" value="{second.id}"' in page
    response = web.post("/reminders/resend", {"one": str(first.id), "id": [str(second.id)],
                                              "next": "/reminders?state=failed"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/reminders?state=failed")
    assert [r.state for r in rows(school)] == ["planned", "failed"]          # only the row's own button counted
    [event] = audit(school, "reminder.resend")
    assert event.actor == ADMIN_LOGIN and event.subject_id == str(first.id)
    assert event.details["previous_reason"] == "smtp_permanent"
    assert "Back in the queue: 1." in web.get("/reminders")
    ReminderSender(school.runtime).send_due()
    assert [r.state for r in rows(school)] == ["sent", "failed"]


def test_a_selection_of_failed_sends_is_resent_together(web, school, smtp_server):
    failed = failed_letters(school, smtp_server, users=(1, 2, 3))
    response = web.post("/reminders/resend", {"id": [str(r.id) for r in failed[:2]]})
    assert response.status_code == 302
    assert [r.state for r in rows(school)] == ["planned", "planned", "failed"]
    assert len(audit(school, "reminder.resend")) == 2
    # A row that is no longer failed is left alone, and the admin is told.
    web.post("/reminders/resend", {"id": [str(failed[0].id)]})
    assert "1 of the chosen rows were no longer failed" in web.get("/reminders")
    assert len(audit(school, "reminder.resend")) == 2


def test_resend_refuses_bad_input_clearly_and_needs_csrf(web, school, smtp_server):
    [failed] = failed_letters(school, smtp_server, users=(1,))
    web.post("/reminders/resend", {})
    assert "Choose at least one row to resend." in web.get("/reminders")
    web.post("/reminders/resend", {"id": ["1", "x1"]})
    assert "Not a row id: x1. Nothing was resent." in web.get("/reminders")
    assert web.client.post("/reminders/resend", data={"id": str(failed.id)}).status_code == 403  # no CSRF token
    # An outside "next" is not followed.
    response = web.post("/reminders/resend", {"id": str(failed.id), "next": "https://evil.example/"})
    assert response.headers["Location"].endswith("/reminders?state=failed")
    assert rows(school)[0].state == "planned"


def unknown_letters(school, smtp_server, users=(1,)) -> list[Reminder]:
    """Letters the SMTP server read in full before the connection dropped: outcome unknown."""
    _, _, inbox = smtp_server
    school.schedule(admin_days=None)
    for user_id in users:
        school.learner(user_id)
        school.expired(user_id, days_ago=3)
    inbox.drop_after_data = True
    run_reminders(school.runtime)
    inbox.drop_after_data = False
    found = rows(school)
    assert [r.state for r in found] == ["unknown"] * len(users)
    return found


def test_unknown_outcomes_are_counted_listed_and_explained(web, school, smtp_server):
    [letter] = unknown_letters(school, smtp_server)
    page = web.get("/reminders")
    assert chip(page, "outcome unknown") == 1
    assert 'href="/reminders?state=unknown"' in page                       # a tab of their own
    page = web.get("/reminders?state=unknown")
    assert table_ids(page) == [letter.id]
    assert "the mail server received the whole message, but its answer never came" in page
    assert f"check Message-ID {letter.message_id} in the mail server's log" in page
    assert "the mail server did not answer after receiving the whole letter" in page   # the reason, in words
    assert f'name="one" value="{letter.id}"' in page and "Mark as delivered" in page and "Resend" in page


def test_an_unknown_letter_has_a_page_with_its_history_and_both_actions(web, school, smtp_server):
    [letter] = unknown_letters(school, smtp_server)
    page = web.get(f"/reminders/letters/{letter.id}")
    assert f"Letter #{letter.id}" in page and "outcome unknown" in page
    assert f"the mail server received the whole message (Message-ID {letter.message_id})" in page
    assert 'data-action="reminder.unknown"' in page
    assert "Handed to the mail server" in page and letter.data_started_at.isoformat() in page
    assert 'action="/reminders/mark-delivered"' in page and 'action="/reminders/resend"' in page
    web.get("/reminders/letters/999999", status=404)


def test_an_unknown_letter_is_marked_delivered_by_an_admin(web, school, smtp_server):
    _, _, inbox = smtp_server
    [letter] = unknown_letters(school, smtp_server)
    response = web.post("/reminders/mark-delivered", {"one": str(letter.id), "next": f"/reminders/letters/{letter.id}"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/reminders/letters/{letter.id}")
    [row] = rows(school)
    assert row.state == "sent" and row.reason == "marked_delivered"
    [event] = audit(school, "reminder.marked_delivered")
    assert event.actor == ADMIN_LOGIN and event.details["message_id"] == letter.message_id
    page = web.get(f"/reminders/letters/{letter.id}")
    assert "Marked as delivered: 1." in page and "marked as delivered by an administrator" in page
    assert 'action="/reminders/mark-delivered"' not in page
    web.post("/reminders/mark-delivered", {"one": str(letter.id)})
    assert "1 of the chosen rows were not waiting for a decision" in web.get("/reminders")
    assert len(inbox.messages) == 1


def test_an_unknown_letter_is_sent_again_by_an_admin(web, school, smtp_server):
    _, _, inbox = smtp_server
    first, second = unknown_letters(school, smtp_server, users=(1, 2))
    page = web.get("/reminders?state=unknown")
    assert "Mark the selected as delivered" in page and "Resend the selected letters" in page
    web.post("/reminders/resend", {"id": [str(first.id)]})
    assert [r.state for r in rows(school)] == ["planned", "unknown"]
    [event] = audit(school, "reminder.resend")
    assert event.actor == ADMIN_LOGIN and event.details["previous_state"] == "unknown"
    ReminderSender(school.runtime).send_due()
    assert [r.state for r in rows(school)] == ["sent", "unknown"] and len(inbox.messages) == 3


def test_the_unknown_outcome_speaks_russian_too(web, school, smtp_server):
    [letter] = unknown_letters(school, smtp_server)
    web.client.set_cookie("mls_lang", "ru")
    page = web.get("/reminders?state=unknown")
    assert "результат неизвестен" in page and "Отметить как доставленное" in page
    assert f"проверьте Message-ID {letter.message_id} в журнале почтового сервера" in page
    assert "Результат этого письма неизвестен" in web.get(f"/reminders/letters/{letter.id}")


def test_a_sender_that_stopped_after_handing_the_letter_over_shows_as_interrupted(web, school):
    school.schedule(admin_days=None)
    school.learner(1)
    school.expired(1, days_ago=3)
    ReminderPlanner(school.runtime).plan()
    now = school.clock.now()
    with school.runtime.sessions.begin() as session:  # the sender died between the mark and its bookkeeping
        session.execute(sa.update(Reminder).values(state="sending", message_id="<abc@school.example>", claimed_by="x:1:0",
                                                   data_started_at=now - timedelta(minutes=20),
                                                   claimed_until=now - timedelta(minutes=1)))
    assert ReminderSender(school.runtime).recover_interrupted() == 1
    page = web.get("/reminders?state=unknown")
    assert "the sender stopped after handing the letter to the mail server" in page
    assert "check Message-ID <abc@school.example> in the mail server's log" in page


# --- digests ------------------------------------------------------------------------------------------

def test_digests_are_listed_and_a_failed_one_is_resent(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(1, None, None), admin_days=1)
    for user_id in (1, 2):
        school.learner(user_id)
        school.expired(user_id, days_ago=1)
    run_reminders(school.runtime)                      # the letters
    school.advance(days=1)
    inbox.fail_with = (554, "5.7.1 rejected")
    run_reminders(school.runtime)                      # the digest, refused
    inbox.fail_with = None
    [digest] = rows(school, ReminderDigest)
    assert digest.state == "failed" and digest.learners == 2
    web = Browser(school)                              # signed in now: a session lasts 12 hours
    page = web.get("/reminders/digests")
    assert "Английский A1" in page and "rejected" in page and "refused by the mail server" in page
    assert chip(page, "failed") == 1
    assert f'name="one" value="{digest.id}"' in page
    assert web.get(f"/reminders/digests?level={OTHER_LEVEL}").count('<tr class="digest') == 0
    assert "Unknown state: nope" in web.get("/reminders/digests?state=nope")
    # The digest's places in the history cannot be resent on their own.
    entries = web.get("/reminders?step=digest")
    assert len(table_ids(entries)) == 2 and 'name="one"' not in entries
    response = web.post("/reminders/digests/resend", {"one": str(digest.id)})
    assert response.status_code == 302
    assert rows(school, ReminderDigest)[0].state == "planned"
    assert {r.state for r in rows(school) if r.step == 4} == {"planned"}
    assert audit(school, "reminder.resend")[0].actor == ADMIN_LOGIN
    ReminderSender(school.runtime).send_due()
    assert inbox.messages[-1][1] == ["boss@school.example"] and rows(school, ReminderDigest)[0].state == "sent"


def test_a_digest_with_an_unknown_outcome_is_marked_delivered_or_resent_from_its_page(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(1, None, None), admin_days=1)
    school.learner(1)
    school.expired(1, days_ago=1)
    run_reminders(school.runtime)
    school.advance(days=1)
    inbox.drop_after_data = True
    run_reminders(school.runtime)
    inbox.drop_after_data = False
    [digest] = rows(school, ReminderDigest)
    assert digest.state == "unknown"
    web = Browser(school)
    page = web.get("/reminders/digests?state=unknown")
    assert chip(page, "outcome unknown") == 1 and f'href="/reminders/digests/{digest.id}"' in page
    assert 'formaction="/reminders/digests/mark-delivered"' in page
    page = web.get(f"/reminders/digests/{digest.id}")
    assert f"Digest #{digest.id}" in page and "Learners in this digest" in page
    assert 'action="/reminders/digests/mark-delivered"' in page and 'action="/reminders/digests/resend"' in page
    web.post("/reminders/digests/mark-delivered", {"one": str(digest.id)})
    assert rows(school, ReminderDigest)[0].state == "sent"
    assert audit(school, "reminder.marked_delivered")[0].actor == ADMIN_LOGIN
    assert len(inbox.messages) == 2


def test_a_letter_overtaken_by_a_later_one_cannot_be_sent_again(school, smtp_server):
    _, _, inbox = smtp_server
    school.schedule(days=(3, 4, None), admin_days=None)
    school.learner(1)
    school.expired(1, days_ago=3)
    inbox.drop_after_data = True
    run_reminders(school.runtime)
    inbox.drop_after_data = False
    school.advance(days=3)                             # past the hold: letter 2 goes out
    run_reminders(school.runtime)
    first, second = rows(school)
    assert (first.state, second.state) == ("unknown", "sent")
    web = Browser(school)
    page = web.get(f"/reminders/letters/{first.id}")
    assert "this one is not sent again, it would arrive out of order" in page
    assert 'action="/reminders/resend"' not in page and 'action="/reminders/mark-delivered"' in page
    web.post("/reminders/resend", {"one": str(first.id)})
    assert "a later letter of their chain planned or sent" in web.get("/reminders")
    assert rows(school)[0].state == "unknown"


# --- unsubscribes -------------------------------------------------------------------------------------

def test_unsubscribed_learners_are_listed_and_can_be_subscribed_again(web, school):
    sent_and_skipped(school)
    unsubscribe(school.runtime.sessions, 2, email="boris@example.com", source="one_click", actor="learner",
                at=school.clock.now())
    page = web.get("/reminders/unsubscribes")
    row = re.search(r'<tr class="unsubscribe" data-user="2">.*?</tr>', page, re.S).group(0)
    assert "boris@example.com" in row and "one-click (mail client)" in row and 'href="/monitor/users/2"' in row
    assert "unsubscribed" in re.search(r'data-user="2">.*?</tr>', web.get("/reminders?user=2"), re.S).group(0)
    assert web.get("/reminders/unsubscribes?q=anna").count('<tr class="unsubscribe"') == 0
    assert web.get("/reminders/unsubscribes?q=2").count('<tr class="unsubscribe"') == 1

    response = web.post("/reminders/unsubscribes/2/resubscribe")
    assert response.status_code == 302
    assert rows(school, Unsubscribe) == []
    [event] = audit(school, "reminders.resubscribed")
    assert event.actor == ADMIN_LOGIN and event.subject_id == "2"
    assert "User 2 gets reminders again." in web.flashes()
    web.post("/reminders/unsubscribes/2/resubscribe")
    assert "User 2 is not on the unsubscribe list." in web.flashes()
    assert web.client.post("/reminders/unsubscribes/2/resubscribe").status_code == 403   # no CSRF token


# --- the learner's unsubscribe page -------------------------------------------------------------------

def link_of(school, user_id: int) -> str:
    return urlsplit(links_for(school.runtime).url(user_id)).path


def test_following_the_link_only_asks_and_the_button_unsubscribes(school):
    school.learner(1, "anna@example.com")
    client = create_app(school.runtime, testing=True).test_client()     # the learner: no session at all
    path = link_of(school, 1)
    response = client.get(path)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and "Отписаться" in page          # reminders.language = ru
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Referrer-Policy"] == "no-referrer"
    assert rows(school, Unsubscribe) == [], "a GET (a mail scanner) must never unsubscribe"
    confirm = re.search(r'name="confirm" value="([^"]+)"', page).group(1)
    response = client.post(path, data={"confirm": confirm})
    assert response.status_code == 200 and "Вы отписались" in response.get_data(as_text=True)
    [row] = rows(school, Unsubscribe)
    assert (row.user_id, row.email, row.source) == (1, "anna@example.com", "link")
    assert "Вы отписались" in client.get(path).get_data(as_text=True)   # the page says so from now on
    assert client.post(path, data={"confirm": confirm}).status_code == 200   # again: fine, nothing changes
    assert len(rows(school, Unsubscribe)) == 1 and len(audit(school, "reminders.unsubscribed")) == 1


def test_one_click_post_from_a_mail_client_needs_no_cookie_or_csrf(school):
    school.learner(1, "anna@example.com")
    client = create_app(school.runtime, testing=True).test_client()
    response = client.post(link_of(school, 1), data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    [row] = rows(school, Unsubscribe)
    assert row.source == "one_click" and row.actor == "learner"


def test_a_post_that_is_neither_one_click_nor_the_page_form_changes_nothing(school):
    school.learner(1)
    client = create_app(school.runtime, testing=True).test_client()
    response = client.post(link_of(school, 1), data={"confirm": "forged"})
    assert response.status_code == 400 and "Запрос пришёл не с этой страницы" in response.get_data(as_text=True)
    assert rows(school, Unsubscribe) == []


def test_a_bad_token_is_a_404_page_that_says_so(school):
    client = create_app(school.runtime, testing=True).test_client()
    token = link_of(school, 1).rsplit("/", 1)[1]
    for path in ("/unsubscribe/not-a-token", f"/unsubscribe/{token[:-2]}xx"):
        response = client.get(path)
        assert response.status_code == 404 and "Ссылка для отписки недействительна" in response.get_data(as_text=True)
        assert client.post(path, data="List-Unsubscribe=One-Click",
                           content_type="application/x-www-form-urlencoded").status_code == 404
    assert rows(school, Unsubscribe) == []


def test_without_public_url_the_page_answers_503(school_factory):
    school = school_factory()
    settings = settings_from_mapping({
        "wordpress": {"db_url": school.settings.wordpress.db_url}, "store": {"url": school.settings.store.url},
        "memberlux": {"rest_base_url": "https://school.example/wp-json"},
        "web": {"secret_key": "test-secret-key-not-for-production"}, "reminders": {"language": "en"}}, environ={})
    runtime = build_runtime(settings, clock=school.clock)
    try:
        response = create_app(runtime, testing=True).test_client().get("/unsubscribe/anything")
        assert response.status_code == 503 and "temporarily unavailable" in response.get_data(as_text=True)
    finally:
        runtime.close()


# --- preview and test send ----------------------------------------------------------------------------

def test_preview_renders_a_real_sleepers_letter_as_the_sender_would(web, school):
    a_sleeper(school)
    page = web.get(f"/reminders/levels/{LEVEL}/preview?letter=1")
    assert "Напоминание 1: Английский A1" in page                     # the subject
    assert "(a current sleeper of the level)" in page and 'href="/monitor/users/1"' in page
    text = re.search(r'<pre class="letter-text">(.*?)</pre>', page, re.S).group(1)
    assert "Здравствуйте, Анна!" in text and "https://side.example/unsubscribe/" in text
    # Letter 1 goes out 3 days after X: the preview shows that day.
    x = school.today - timedelta(days=2)
    assert (x + timedelta(days=3)).isoformat() in page
    frame = re.search(r'<iframe class="letter-frame" src="([^"]+)"', page).group(1)
    assert "<script" not in page.split("<iframe", 1)[1].split("</iframe>", 1)[0]
    response = web.client.get(frame)
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "Здравствуйте, Анна!" in body
    assert 'href="https://school.example/renew/30?u=1"' in body
    assert response.headers["Content-Security-Policy"].startswith("sandbox;")
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert rows(school) == [] and audit(school, "reminders.test_sent") == []


def test_preview_of_the_digest_and_for_a_chosen_learner(web, school):
    a_sleeper(school)
    school.learner(2, "boris@example.com", first="Борис")
    page = web.get(f"/reminders/levels/{LEVEL}/preview?letter=admin&user=boris@example.com")
    assert "Сводка: Английский A1" in page and "boris@example.com" in page and "(chosen)" in page
    assert "This user has no ended access to the level" in page
    assert "boss@school.example" in page                                  # where the digest goes


def test_preview_input_errors_are_explained(web, school):
    a_sleeper(school)
    assert "There is no WordPress user 77." in web.get(f"/reminders/levels/{LEVEL}/preview?user=77", 422)
    assert "«anna» is neither a user id nor an e-mail address." in web.get(f"/reminders/levels/{LEVEL}/preview?user=anna", 422)
    assert "Unknown letter «9»" in web.get(f"/reminders/levels/{LEVEL}/preview?letter=9", 422)
    for url in ("/reminders/levels/999/preview", "/reminders/levels/999/preview/html"):
        assert web.client.get(url).status_code == 404
    assert web.post("/reminders/levels/999/test", {"to": "me@example.com"}).status_code == 404
    response = web.client.get(f"/reminders/levels/{LEVEL}/preview/html?letter=1&draft=forged")
    assert response.status_code == 400 and response.headers["Content-Security-Policy"].startswith("sandbox;")


def test_preview_uses_the_unsaved_form_and_shows_template_errors_with_their_line(web, school):
    a_sleeper(school)
    saved = MonitorSettings(school.runtime).effective(LEVEL)
    data = settings_form(school, **{"letters.1.subject": "Скучаем, {{ first_name }}",
                                    "letters.1.body": "<p>Черновик для {{ display_name }}</p>", "letter": "1"})
    response = web.post(f"/reminders/levels/{LEVEL}/preview", data)
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 200 and "Скучаем, Анна" in page and "Черновик для Анна Иванова" in page
    assert "not saved yet" in page
    frame = re.search(r'<iframe class="letter-frame" src="([^"]+)"', page).group(1)
    assert "draft=" in frame and "Черновик для Анна Иванова" in web.client.get(html.unescape(frame)).get_data(as_text=True)
    assert MonitorSettings(school.runtime).effective(LEVEL) == saved     # nothing saved

    data["letters.1.body"] = "<p>Здравствуйте!</p>\n<p>{{ frist_name }}</p>"
    data["admin_body"] = "{% if learners %}"
    response = web.post(f"/reminders/levels/{LEVEL}/preview", data)
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 422
    assert "Template error on line 2: unknown variable «frist_name»" in page
    assert re.search(r"<code>admin_body</code>: Template error on line 1: .*endif", page)
    assert '<iframe' not in page


def test_a_long_draft_is_posted_into_the_frame(web, school):
    a_sleeper(school)
    body = "".join(f"<p>Абзац {n}: {{{{ first_name }}}} — {'x' * 40}{n * 7919 % 10007}</p>\n" for n in range(400))
    data = settings_form(school, **{"letters.1.body": body, "letter": "1"})
    page = html.unescape(web.post(f"/reminders/levels/{LEVEL}/preview", data).get_data(as_text=True))
    assert 'target="letter-frame"' in page and "Show the HTML part" in page
    response = web.post(f"/reminders/levels/{LEVEL}/preview/html", {**data, "user": "1"})
    assert response.status_code == 200 and "Абзац 399: Анна" in response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"].startswith("sandbox;")


def test_send_test_delivers_to_the_given_address_without_touching_the_ledger(web, school, smtp_server):
    _, _, inbox = smtp_server
    a_sleeper(school)
    response = web.post(f"/reminders/levels/{LEVEL}/test", {"letter": "1", "user": "1", "to": "me@school.example"})
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 200 and "Test letter sent to me@school.example" in page
    [(_sender, recipients, message)] = inbox.messages
    assert recipients == ["me@school.example"] and message["Subject"] == "[TEST] Напоминание 1: Английский A1"
    assert "Здравствуйте, Анна!" in message.get_body(("html",)).get_content()
    assert message["List-Unsubscribe"] is None
    assert rows(school) == [] and rows(school, ReminderDigest) == []
    [event] = audit(school, "reminders.test_sent")
    assert (event.subject_type, event.subject_id, event.actor) == ("monitor_level", str(LEVEL), ADMIN_LOGIN)
    assert event.details["to"] == "me@school.example" and event.details["message_id"] == message["Message-ID"]

    # The unsaved form's values are what is sent, when the preview carried them.
    data = settings_form(school, **{"letters.1.subject": "Черновик", "letter": "1", "user": "1", "to": "me@school.example"})
    assert web.post(f"/reminders/levels/{LEVEL}/test", data).status_code == 200
    assert inbox.messages[-1][2]["Subject"] == "[TEST] Черновик"


def test_send_test_errors_are_clear(web, school, smtp_server):
    _, _, inbox = smtp_server
    a_sleeper(school)
    response = web.post(f"/reminders/levels/{LEVEL}/test", {"letter": "1", "to": "not an address"})
    assert response.status_code == 422 and "Not an e-mail address: «not an address»" in response.get_data(as_text=True)
    inbox.fail_with = (550, "5.1.1 no such mailbox")
    response = web.post(f"/reminders/levels/{LEVEL}/test", {"letter": "1", "to": "me@school.example"})
    assert response.status_code == 502 and "The mail server did not take the letter" in response.get_data(as_text=True)
    assert inbox.messages == [] and audit(school, "reminders.test_sent") == []


def test_a_test_letter_whose_outcome_is_unknown_says_it_may_have_arrived(web, school, smtp_server):
    _, _, inbox = smtp_server
    a_sleeper(school)
    inbox.drop_after_data = True
    response = web.post(f"/reminders/levels/{LEVEL}/test", {"letter": "1", "to": "me@school.example"})
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 502 and "it may have arrived (Message-ID <" in page
    assert "It was not sent again." in page and len(inbox.messages) == 1


def test_send_test_with_mail_disabled_says_so(school_factory):
    school = school_factory()            # no smtp section: e-mail is disabled
    web = Browser(school)
    a_sleeper(school)
    response = web.post(f"/reminders/levels/{LEVEL}/test", {"letter": "1", "to": "me@school.example"})
    assert response.status_code == 503 and "E-mail is disabled" in response.get_data(as_text=True)


def test_a_pickup_directory_counts_as_working_mail_on_the_preview_and_takes_the_test_letter(school_factory, tmp_path):
    school = school_factory(smtp={"pickup_dir": str(tmp_path / "mail"), "from_address": "school@example.org"})
    web = Browser(school)
    a_sleeper(school)
    assert "E-mail is disabled" not in web.get(f"/reminders/levels/{LEVEL}/preview?letter=1")
    response = web.post(f"/reminders/levels/{LEVEL}/test", {"letter": "1", "to": "me@school.example"})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    [letter] = (tmp_path / "mail").glob("*.eml")
    assert b"me@school.example" in letter.read_bytes()


# --- the per-level settings form ----------------------------------------------------------------------

def test_settings_form_lists_variables_and_saves_the_renewal_link(web, school):
    school.schedule()
    page = web.get(f"/monitor/levels/{LEVEL}/settings")
    assert "{{ unsubscribe_url }}" in page and "the learner's personal unsubscribe link" in page
    assert "{{ learner_count }}" in page and "{{ product_id }}" in page
    assert 'formaction="/reminders/levels/30/preview"' in page
    assert "персональная ссылка отписки" in web.get(f"/monitor/levels/{LEVEL}/settings?lang=ru")
    data = settings_form(school, renewal_url="https://school.example/renew?level={{ level_id }}")
    response = web.post(f"/monitor/levels/{LEVEL}/settings", data)
    assert response.status_code == 302
    assert MonitorSettings(school.runtime).effective(LEVEL).renewal_url == "https://school.example/renew?level={{ level_id }}"
    assert 'value="https://school.example/renew?level={{ level_id }}"' in web.get(f"/monitor/levels/{LEVEL}/settings")


def test_settings_form_refuses_an_invalid_template_with_its_line(web, school):
    school.schedule()
    saved = MonitorSettings(school.runtime).effective(LEVEL)
    data = settings_form(school, **{"letters.2.body": "<p>Привет</p>\n<p>{% if first_name %}</p>",
                                    "renewal_url": "https://x.example/{{ unsubscribe_url }}"})
    response = web.post(f"/monitor/levels/{LEVEL}/settings", data)
    page = html.unescape(response.get_data(as_text=True))
    assert response.status_code == 422
    body = re.search(r'data-field="letters.2.body">.*?</div>', page, re.S).group(0)
    assert "Template error on line 2:" in body and "endif" in body
    link = re.search(r'data-field="renewal_url">.*?</div>', page, re.S).group(0)
    assert "Template error on line 1: unknown variable «unsubscribe_url»" in link
    assert MonitorSettings(school.runtime).effective(LEVEL) == saved
    page = html.unescape(web.client.post(f"/monitor/levels/{LEVEL}/settings?lang=ru",
                                         data={**data, "csrf_token": web.token()}).get_data(as_text=True))
    assert "Ошибка в шаблоне, строка 1: неизвестная переменная «unsubscribe_url»" in page
