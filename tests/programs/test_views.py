"""The program pages and the programs' JSON API against the emulated site, with an administrator signed
in through the real login form: list, form (rows added and removed without JavaScript, problems per
field, warnings after saving), program page, enrol and withdraw, the learner's timeline, the legacy
import, CSRF on every form, and the API's answers (201/200/400/401/404/422)."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from sidecar.bootstrap import build_runtime, store_url
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.devstack import seed
from sidecar.domain.messages import Message
from sidecar.domain.programs import Step
from sidecar.monitor.certificates import CertificateClassifier
from sidecar.programs.catalog import ProgramDefinition
from sidecar.store.grant_models import Grant
from sidecar.store.program_models import Enrolment, EnrolmentEvent, Program
from tests.message_samples import samples, shown_values
from tests.programs.support import BUSINESS, ENGLISH, TRAVEL, YOGA, School
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

API_KEY = strong_secret("programs-api-key")
TOKEN = strong_secret("programs-bearer-token")              # a plain token: read only
ENROL_TOKEN = strong_secret("programs-enrol-token")          # may enrol (scopes = ["read", "enrol"])


@pytest.fixture
def school(small_site, emulator, settings_for, admin_pages):
    settings = settings_for(small_site, emulator, bridge={"api_keys": {"crm": API_KEY}},
                            web={"api_tokens": {"reports": TOKEN,
                                                "forms": {"token": ENROL_TOKEN, "scopes": ["read", "enrol"]}}})
    migrate_store(store_url(settings))
    runtime = build_runtime(settings)
    try:
        yield School(runtime, emulator, admin_pages)
    finally:
        runtime.close()


def form_data(**overrides) -> dict:
    data = {"name": "Йога и английский", "counting": "manual", "rows": "3",
            "steps-1-term_id": str(YOGA), "steps-1-duration": "1", "steps-1-units": "months",
            "steps-2-term_id": str(ENGLISH), "steps-2-duration": "2", "steps-2-units": "months",
            "steps-3-term_id": "", "steps-3-duration": "", "steps-3-units": "months",
            "notify_email": "", "notify_step_subject": "", "notify_step_body": "", "notify_complete_subject": "",
            "notify_complete_body": "", "webhook_url": "", "save": "1"}
    data.update(overrides)
    return data


# --- every page, both languages --------------------------------------------------------------------

def test_every_program_page_renders_in_russian_and_english(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners()
    enrolment = school.progression.enrol(program, learner, source="ui", actor="admin").enrolment_id
    pages = {
        "/programs": ("Bundle programs", "Программы обучения"),
        "/programs/new": ("New program", "Новая программа"),
        f"/programs/{program}/edit": ("Edit: Английский шаг за шагом", "Изменение: Английский шаг за шагом"),
        f"/programs/{program}": ("Learners per step", "Ученики по шагам"),
        f"/programs/enrolments/{enrolment}": ("Timeline:", "История:"),
        "/programs/import": ("Import from the legacy bundle plugin", "Импорт из старого плагина программ"),
    }
    for url, (english, russian) in pages.items():
        assert english in school.get(url + "?lang=en"), url
        assert russian in school.get(url + "?lang=ru"), url
    listed = school.get("/programs?lang=en")
    assert 'href="/programs">Programs</a>' in listed                     # in the navigation
    row = re.search(rf'<tr class="program[^"]*" data-id="{program}">.*?</tr>', listed, re.S).group(0)
    assert "Йога для начинающих" in row and "Английский с нуля" in row and ">1 learner</a>" in row
    assert 'href="/programs">Программы</a>' in school.get("/programs?lang=ru")


def test_pages_need_a_signed_in_administrator(school):
    anonymous = school.app.test_client()
    response = anonymous.get("/programs")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert anonymous.get("/programs/import").status_code == 302


def test_every_form_needs_the_csrf_token(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners()
    enrolment = school.progression.enrol(program, learner, source="ui", actor="admin").enrolment_id
    for url, data in (("/programs/new", form_data()), (f"/programs/{program}/edit", form_data()),
                      (f"/programs/{program}/status", {"status": "archived"}),
                      (f"/programs/{program}/enrol", {"user": str(learner)}),
                      (f"/programs/enrolments/{enrolment}/withdraw", {}), ("/programs/import", {})):
        response = school.client.post(url, data=data)
        assert response.status_code == 403, url  # no CSRF token
    with school.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 1
        assert session.get(Enrolment, enrolment).status == "active"


# --- the form ----------------------------------------------------------------------------------------

def test_steps_are_added_and_removed_without_javascript(school):
    page = school.page_of(school.post("/programs/new", form_data(add="1", save="")))
    assert 'name="rows" value="4"' in page and 'name="steps-4-term_id"' in page
    assert re.search(rf'name="steps-2-term_id"[^>]*>.*?<option value="{ENGLISH}" selected', page, re.S)
    page = school.page_of(school.post("/programs/new", form_data(remove="1", save="")))
    assert 'name="rows" value="2"' in page
    assert re.search(rf'name="steps-1-term_id"[^>]*>.*?<option value="{ENGLISH}" selected', page, re.S)
    with school.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0    # nothing saved
    # The form explains the counting rule and lists the legacy placeholders.
    new = school.get("/programs/new")
    assert "cascade" in new or "through the whole program" in new
    for name in ("[user_id]", "[user_email]", "[current_course]", "[next_step]", "[duration]", "[units]"):
        assert name in new
    assert "certificates: automatic" in new and "certificates: by hand" in new


def test_a_valid_program_is_saved_and_its_warnings_shown_after_saving(school):
    response = school.post("/programs/new", form_data(**{
        "steps-2-term_id": str(TRAVEL), "steps-3-term_id": str(ENGLISH), "steps-3-duration": "7",
        "steps-3-units": "days", "notify_email": "manager@school.example", "notify_step_subject": "[user_login] → [next_step]",
        "webhook_url": "http://127.0.0.1:9/hook", "grant_first_step": "1"}))
    assert response.status_code == 302
    with school.runtime.sessions() as session:
        program = session.scalar(sa.select(Program))
    assert response.headers["Location"].endswith(f"/programs/{program.id}")
    view = school.catalog.get(program.id)
    assert [(s.term_id, s.duration, s.units) for s in view.definition.steps] == [
        (YOGA, 1, "months"), (TRAVEL, 2, "months"), (ENGLISH, 7, "days")]
    assert view.definition.grant_first_step and view.definition.notify_email == "manager@school.example"
    shown = school.flashes(school.get(f"/programs/{program.id}"))
    assert "Program «Йога и английский» saved." in shown
    assert any("Step 2: level" in s and "issues no certificates" in s for s in shown), shown
    assert any("Deliveries to the webhook URL will be refused" in s and "an address inside our network" in s for s in shown)
    assert school.audit("program.created")[0].actor == seed.DEMO_ADMIN_LOGIN


def test_blocking_problems_are_shown_at_their_field_and_nothing_is_saved(school):
    response = school.post("/programs/new", form_data(**{
        "name": "", "steps-2-duration": "two", "steps-3-duration": "3", "notify_email": "not-an-address",
        "webhook_url": "ftp://example.com/x"}))
    page = school.page_of(response)
    assert response.status_code == 422
    assert "Nothing was saved" in page
    assert school.field_error(page, "steps.2.duration") == "Enter a positive whole number (got «two»)."
    assert school.field_error(page, "steps.3.term_id") == "Choose a level (or clear the row)."
    assert school.field_error(page, "notify_email") == "Not an e-mail address: «not-an-address»."
    assert school.field_error(page, "webhook_url") == "Enter an http:// or https:// address."
    # What the form let through is checked by the rules, which answer per field as well.
    response = school.post("/programs/new?lang=ru", form_data(**{
        "name": " ", "counting": "any", "steps-1-term_id": str(BUSINESS), "steps-3-term_id": "999",
        "steps-3-duration": "1"}))
    page = school.page_of(response)
    assert response.status_code == 422
    assert school.field_error(page, "name") == "У программы должно быть название."
    assert "выдаёт сертификаты автоматически при каждой активации" in school.field_error(page, "counting")
    assert school.field_error(page, "steps.3.term_id") == "Уровня доступа №999 на сайте нет."
    assert 'value="any" checked' in page                          # the admin's choices are kept
    with school.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0


def test_editing_keeps_the_legacy_id_and_refuses_to_drop_steps_learners_are_on(school):
    program = school.program(YOGA, ENGLISH, TRAVEL)
    [learner] = school.learners()
    enrolment = school.progression.enrol(program, learner, source="ui", actor="admin").enrolment_id
    with school.runtime.sessions.begin() as session:
        session.get(Enrolment, enrolment).current_step = 2
    page = school.get(f"/programs/{program}/edit")
    assert 'name="rows" value="4"' in page and 'value="Английский шаг за шагом"' in page
    response = school.post(f"/programs/{program}/edit", form_data(rows="2"))
    page = school.page_of(response)
    assert response.status_code == 422
    assert "Learners are on step 3: keep at least 3 steps." in school.field_error(page, "steps")
    response = school.post(f"/programs/{program}/edit", form_data(**{"steps-3-term_id": str(TRAVEL),
                                                                      "steps-3-duration": "1"}))
    assert response.status_code == 302
    assert school.catalog.get(program).definition.name == "Йога и английский"


def test_archive_and_activate(school):
    program = school.program(YOGA, ENGLISH)
    response = school.post(f"/programs/{program}/status", {"status": "archived"})
    assert response.status_code == 302 and school.catalog.get(program).status == "archived"
    page = school.get(f"/programs/{program}")
    assert "The program is archived." in school.flashes(page) and "Archived programs take no new learners." in page
    assert school.post(f"/programs/{program}/status", {"status": "nonsense"}).status_code == 400
    school.post(f"/programs/{program}/status", {"status": "active"})
    assert school.catalog.get(program).status == "active"
    assert school.post("/programs/999/status", {"status": "active"}).status_code == 404


# --- the program page ----------------------------------------------------------------------------------

def test_program_page_counts_learners_per_step_and_lists_the_stalled(school, monkeypatch):
    program = school.program(YOGA, ENGLISH)
    learners = school.learners(3)
    ids = [school.progression.enrol(program, u, source="ui", actor="admin").enrolment_id for u in learners]
    today = school.runtime.clock.today_utc()
    with school.runtime.sessions.begin() as session:
        session.get(Enrolment, ids[0]).step_since = today - timedelta(days=40)
        session.get(Enrolment, ids[1]).current_step = 1
        session.get(Enrolment, ids[2]).status = "completed"
    page = school.get(f"/programs/{program}")
    step_1 = re.search(r'<tr class="step" data-step="1">.*?</tr>', page, re.S).group(0)
    assert re.search(r'class="count">1</a>', step_1) and re.search(r'<td class="num warn-text">1</td>', step_1)
    assert "Completed: 1 · withdrawn: 0" in page
    stalled = re.findall(r'<tr class="stalled-learner" data-enrolment="(\d+)"', page)
    assert stalled == [str(ids[0])]
    assert re.findall(r'<tr class="stalled-learner"', school.get(f"/programs/{program}?stalled=60")) == []
    assert "Ignored the parameter stalled=abc" in school.get(f"/programs/{program}?stalled=abc")

    def listed(url: str) -> list[int]:
        return [int(i) for i in re.findall(r'<tr class="learner [^"]*" data-enrolment="(\d+)"', school.get(url))]

    assert listed(f"/programs/{program}") == ids
    assert listed(f"/programs/{program}?step=2") == [ids[1]]
    assert listed(f"/programs/{program}?status=completed") == [ids[2]]
    monkeypatch.setattr("sidecar.programs.views.PER_PAGE", 2)
    first = school.get(f"/programs/{program}")
    nxt = re.search(r'<a href="([^"]+)" class="next"', first).group(1)
    assert listed(html.unescape(nxt)) == [ids[2]]


def test_waiting_certificates_are_listed_with_their_reason(school):
    program = school.program(YOGA, ENGLISH)
    from sidecar.store.monitor_models import CertificateClassRow
    from sidecar.store.program_models import ProgramInbox

    [learner] = school.learners(1)
    school.post(f"/programs/{program}/enrol", {"user": str(learner)})
    now = school.runtime.clock.now()
    with school.runtime.sessions.begin() as session:
        session.add(CertificateClassRow(certificate_id=777, user_id=learner, level_id=YOGA, cls="manual", reason="test",
                                        date_issue=now.date(), create_date=now.date(), responsible_person=1,
                                        fingerprint="f", first_seen_at=now, checked_at=now, deleted_at=None))
        why = Message("programs.step_waits", {"step": 2, "detail": "no mbl_key product for level 7, 2 months"})
        session.add(ProgramInbox(certificate_id=777, queued_at=now, attempts=2, last_error=why.stored()))
        # A row written before messages had codes keeps its English sentence.
        session.add(CertificateClassRow(certificate_id=778, user_id=learner, level_id=YOGA, cls="manual", reason="test",
                                        date_issue=now.date(), create_date=now.date(), responsible_person=1,
                                        fingerprint="g", first_seen_at=now, checked_at=now, deleted_at=None))
        session.add(ProgramInbox(certificate_id=778, queued_at=now, attempts=1,
                                 last_error="step 2 cannot be granted: the bridge said no"))

    def row(certificate_id, lang):
        return re.search(rf'<tr class="waiting-certificate" data-certificate="{certificate_id}">.*?</tr>',
                         school.get(f"/programs/{program}?lang={lang}"), re.S).group(0)

    assert "Шаг 2 пока нельзя выдать: no mbl_key product for level 7, 2 months" in row(777, "ru")
    assert "Step 2 cannot be granted yet: no mbl_key product for level 7, 2 months" in row(777, "en")
    assert "step 2 cannot be granted: the bridge said no" in row(778, "ru")


def test_enrol_form_by_id_or_email_with_or_without_step_one(school):
    program = school.program(YOGA, ENGLISH)
    first, second = school.learners(2)
    email = school.runtime.reader.user(second).email
    response = school.post(f"/programs/{program}/enrol", {"user": str(first)})
    assert response.status_code == 302
    shown = school.flashes(school.get(f"/programs/{program}"))
    [enrolment] = school.enrolments(program)
    assert f"Enrolled (enrolment #{enrolment.id})." in shown and enrolment.source == "ui"
    assert enrolment.actor == seed.DEMO_ADMIN_LOGIN

    school.post(f"/programs/{program}/enrol", {"user": email.upper(), "grant_first": "1"})
    shown = school.flashes(school.get(f"/programs/{program}"))
    assert any("step 1 is being granted (grant" in s for s in shown), shown
    with school.runtime.sessions() as session:
        [grant] = session.scalars(sa.select(Grant).where(Grant.channel == "program")).all()
    assert grant.term_id == YOGA and grant.email.lower() == email.lower()

    school.post(f"/programs/{program}/enrol", {"user": str(first)})
    assert any("Already enrolled" in s for s in school.flashes(school.get(f"/programs/{program}")))
    response = school.post(f"/programs/{program}/enrol", {"user": "nobody@example.com"})
    assert "No user's ID, login, e-mail or name matches «nobody@example.com»." in school.get(
        response.headers["Location"].split("#")[0])
    school.post(f"/programs/{program}/enrol", {"user": "999999"})
    assert "No WordPress user 999999." in school.flashes(school.get(f"/programs/{program}"))
    school.post(f"/programs/{program}/enrol", {"user": "   "})
    assert any("Enter a WordPress user ID, e-mail, login or name" in s
               for s in school.flashes(school.get(f"/programs/{program}")))
    school.catalog.set_status(program, "archived", actor="test")
    school.post(f"/programs/{program}/enrol", {"user": str(school.learners(3)[2])})
    assert any("The program is archived" in s for s in school.flashes(school.get(f"/programs/{program}")))
    assert len(school.enrolments(program)) == 2


def test_enrol_form_finds_a_learner_by_login_or_by_a_part_of_the_name(school):
    program = school.program(YOGA, ENGLISH)
    first, second = school.learners(2)
    by_login = school.runtime.reader.user(first)
    response = school.post(f"/programs/{program}/enrol", {"user": by_login.login.upper()})
    assert response.status_code == 302
    assert [e.user_id for e in school.enrolments(program)] == [first]

    # A name is not a key: the page lists whoever matches, each with its own button.
    wanted = school.runtime.reader.user(second)
    part = wanted.last_name[1:-1] or wanted.last_name
    response = school.post(f"/programs/{program}/enrol", {"user": part, "grant_first": "1"})
    assert response.status_code == 302 and "find=" in response.headers["Location"]
    page = school.get(response.headers["Location"].split("#")[0])
    found = [int(u) for u in re.findall(r'<tr class="found-user" data-user="(\d+)"', page)]
    assert second in found and f"Users matching «{part}»" in page
    assert all(part.casefold() in " ".join((u.login, u.email, u.display_name, u.first_name, u.last_name)).casefold()
               for u in school.runtime.reader.users(found).values())
    school.post(f"/programs/{program}/enrol", {"user": str(second), "grant_first": "1"})
    assert sorted(e.user_id for e in school.enrolments(program)) == sorted([first, second])

    page = school.get(f"/programs/{program}?find=%25_nobody_%25")
    assert "No user's ID, login, e-mail or name matches «%_nobody_%»." in page
    assert "Пользователи, подходящие под «" in school.get(f"/programs/{program}?find={part}&lang=ru")


def test_enrolling_with_a_step_that_has_no_product_says_why(school):
    program = school.catalog.create(ProgramDefinition(name="Без товара", steps=(Step(YOGA, 5, "days"), Step(ENGLISH, 1, "months"))),
                                    actor="test").id
    [learner] = school.learners()
    school.post(f"/programs/{program}/enrol", {"user": str(learner), "grant_first": "1"})
    shown = school.flashes(school.get(f"/programs/{program}"))
    assert any(s.startswith("Not enrolled: step 1 cannot be granted.") for s in shown), shown
    assert school.enrolments(program) == []


def test_withdraw_ends_the_enrolment_and_shows_in_the_timeline(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners()
    enrolment = school.progression.enrol(program, learner, source="ui", actor="admin").enrolment_id
    response = school.post(f"/programs/enrolments/{enrolment}/withdraw", {"next": f"/programs/{program}?status=active"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/programs/{program}?status=active")
    assert school.enrolments(program)[0].status == "withdrawn"
    page = school.get(f"/programs/enrolments/{enrolment}")
    assert f"Withdrawn by {seed.DEMO_ADMIN_LOGIN}" in page and "withdrawn" in page
    school.post(f"/programs/enrolments/{enrolment}/withdraw")
    assert f"Enrolment #{enrolment} is not in progress: nothing to withdraw." in school.flashes(school.get(f"/programs/{program}"))
    # An outside "next" is not followed.
    response = school.post(f"/programs/enrolments/{enrolment}/withdraw", {"next": "https://evil.example/"})
    assert response.headers["Location"].endswith(f"/programs/{program}")
    assert school.client.post("/programs/enrolments/999/withdraw", data={"csrf_token": school.token()}).status_code == 404


def test_timeline_shows_grants_certificates_and_reasons_in_words(school):
    program = school.program(YOGA, ENGLISH, TRAVEL)
    [learner] = school.learners()
    enrolment = school.progression.enrol(program, learner, source="ui", actor="admin").enrolment_id
    school.certify(learner, ENGLISH)            # not the current step: ignored, with a reason
    school.certify(learner, YOGA)               # the current step: step 2 granted
    CertificateClassifier(school.runtime).sync()
    report = school.progression.process_inbox()
    assert report.advanced == 1
    with school.runtime.sessions() as session:
        grant_id = session.scalar(sa.select(EnrolmentEvent.grant_id).where(EnrolmentEvent.kind == "step_granted"))
    page = school.get(f"/programs/enrolments/{enrolment}")
    assert f'href="/admin/grants/{grant_id}" class="grant-link">{grant_id}</a>' in page
    assert "Passed «Йога для начинающих» (#10); granted «Английский с нуля» (#7)" in page
    assert "the certificate is for another level than the learner's current step" in page
    assert "2 of 3" in page
    ru = school.get(f"/programs/enrolments/{enrolment}?lang=ru")
    assert "сертификат за другой уровень, не за текущий шаг ученика" in ru and "выдан шаг" in ru
    assert "Кем: администратор (admin)" in ru
    school.get("/programs/enrolments/999", status=404)


# --- legacy import -------------------------------------------------------------------------------------

def test_legacy_import_shows_the_plan_then_imports_all_of_it(school):
    page = school.get("/programs/import")
    [post] = re.findall(r'<tr class="import-program" data-post="(\d+)"', page)
    assert "Step 1's duration is not taken from the legacy form" in page
    assert "Йога для начинающих" in page and "Английский с нуля" in page
    enrolments = re.findall(r'<tr class="import-enrolment" data-user="(\d+)"', page)
    assert enrolments and "mlp_current_step says step" in page
    assert re.search(r'<form method="post" action="/programs/import" class="actions import-form">.*?<button type="submit">Import',
                     page, re.S)
    assert "<td>published</td>" in page and "<td>publish</td>" not in page    # WordPress's post status, worded
    russian = school.get("/programs/import?lang=ru")
    assert "Срок шага 1 из старой формы не берётся" in russian and "<td>опубликована</td>" in russian

    response = school.post("/programs/import?lang=en")
    done = school.page_of(response)
    assert response.status_code == 200 and "Import finished" in done
    assert re.search(r'data-count="programs">1<', done)
    assert re.search(rf'data-count="enrolments">{len(enrolments)}<', done)
    with school.runtime.sessions() as session:
        program = session.scalar(sa.select(Program))
        assert program.legacy_post_id == int(post)
        assert session.scalar(sa.select(sa.func.count()).select_from(Enrolment)) == len(enrolments)
    with school.runtime.sessions() as session:
        imported = session.scalar(sa.select(EnrolmentEvent).where(EnrolmentEvent.kind == "imported").limit(1))
    timeline = school.get(f"/programs/enrolments/{imported.enrolment_id}?lang=ru")
    assert "Импортирован из старого плагина" in timeline and "mlp_current_step указывает шаг" in timeline
    assert imported.detail["evidence"][0].startswith("mlp_current_step: step ")   # English kept for the API
    with school.runtime.sessions.begin() as session:   # an event written before messages had codes
        session.get(EnrolmentEvent, imported.id).detail = {"evidence": ["mlp_current_step: step 1"], "completed": False}
    timeline = school.get(f"/programs/enrolments/{imported.enrolment_id}?lang=ru")
    assert "Импортирован из старого плагина. Основания: mlp_current_step: step 1" in timeline
    again = school.get("/programs/import?lang=en")
    assert f"already imported as program #{program.id}" in again and "<button type=\"submit\" disabled>" in again
    assert school.audit("program.legacy_imported")[0].actor == seed.DEMO_ADMIN_LOGIN


def test_every_message_code_is_shown_on_the_import_page_in_both_languages(school, monkeypatch):
    """The import page shows any message of the registry (notes, problems, evidence share one wording)."""
    from flask import g

    from sidecar.programs import legacy, views
    from sidecar.web.messages import say

    said = samples()
    plan = legacy.ImportPlan(programs=[legacy.ProgramPlan(4242, "P", "publish", None, notes=said)])
    monkeypatch.setattr(legacy, "plan_import", lambda runtime: plan)
    for language in ("ru", "en"):
        page = school.get(f"/programs/import?lang={language}")
        notes = re.search(r'<ul class="notes">(.*?)</ul>', page, re.S).group(1)
        shown = re.findall(r"<li>(.*?)</li>", notes, re.S)
        with school.app.test_request_context("/"):
            g.language = language
            display = views._display(school.runtime)
            assert shown == [say(message, display) for message in said]
        for message, text in zip(said, shown, strict=True):
            assert text != message.english() or language == "en", text
            assert all(value in text for value in shown_values(message)), (message, text)


def test_legacy_import_with_a_blocking_problem_imports_nothing(school):
    pm = sa.Table("wp_postmeta", sa.MetaData(), autoload_with=school.engine)
    with school.engine.begin() as conn:
        conn.execute(pm.update().where(pm.c.meta_key == "mlp_steps").values(meta_value="a:2:{i:0;"))
    page = school.get("/programs/import")
    assert "is not valid PHP-serialized data" in page and "<button type=\"submit\" disabled>" in page
    assert "некорректные данные PHP-serialize" in school.get("/programs/import?lang=ru")
    response = school.post("/programs/import?lang=en")
    assert response.status_code == 409
    assert "Nothing was imported: the plan has blocking problems." in school.page_of(response)
    with school.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Program)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Enrolment)) == 0


# --- the API -------------------------------------------------------------------------------------------

def api(school, program, body=None, *, key=API_KEY, token=None, raw=None):
    headers = {"X-API-Key": key} if key else {}
    if token:
        headers = {"Authorization": token}
    kwargs = {"data": raw, "content_type": "application/json"} if raw is not None else {"json": body}
    return school.app.test_client().post(f"/api/v1/programs/{program}/enrolments", headers=headers, **kwargs)


def test_api_enrols_once_by_id_or_email(school):
    program = school.program(YOGA, ENGLISH)
    first, second = school.learners(2)
    created = api(school, program, {"user": first})
    assert created.status_code == 201, created.json
    body = created.json
    assert body["ok"] and body["created"] and body["grant_id"] is None
    assert created.headers["Location"] == body["status_url"] == f"/api/v1/programs/{program}/enrolments/{body['enrolment_id']}"
    again = api(school, program, {"user": str(first), "grant_first": True})
    assert again.status_code == 200
    assert again.json == {**body, "created": False}
    email = school.runtime.reader.user(second).email
    granted = api(school, program, {"user": email, "grant_first": True}, key=None, token=f"Bearer {ENROL_TOKEN}")
    assert granted.status_code == 201 and granted.json["grant_id"]
    [_one, two] = school.enrolments(program)
    assert (two.user_id, two.source, two.actor) == (second, "api", "token:forms")
    assert school.enrolments(program)[0].actor == "api_key:crm"


def test_api_refuses_bad_credentials_with_401(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners()
    for response in (api(school, program, {"user": learner}, key=None), api(school, program, {"user": learner}, key="wrong"),
                     api(school, program, {"user": learner}, key=None, token="Bearer wrong"),
                     api(school, program, {"user": learner}, key=None, token="Basic abc")):
        assert response.status_code == 401 and response.json["ok"] is False and response.json["code"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # An administrator's browser session is not enough for a POST without a CSRF token.
    response = school.client.post(f"/api/v1/programs/{program}/enrolments", json={"user": learner})
    assert response.status_code == 401
    assert school.enrolments(program) == []


def test_api_errors_are_clear(school):
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners()
    assert api(school, 999, {"user": learner}).status_code == 404
    assert api(school, "abc", {"user": learner}).json["code"] == "not_found"
    unknown = api(school, program, {"user": "nobody@example.com"})
    assert unknown.status_code == 422 and unknown.json["code"] == "unknown_user"
    assert api(school, program, {"user": 999999}).json["code"] == "unknown_user"
    bad = api(school, program, raw="{not json")
    assert bad.status_code == 400 and bad.json["code"] == "malformed_json"
    for body, field in (([], None), ({}, "user"), ({"user": None}, "user"), ({"user": True}, "user"),
                        ({"user": "Анна"}, "user"), ({"user": learner, "grant_first": "yes"}, "grant_first")):
        response = api(school, program, body)
        assert response.status_code == 400 and response.json["code"] == "invalid_input", body
        assert response.json.get("field") == field
    no_product = school.catalog.create(ProgramDefinition(name="Без товара", steps=(Step(YOGA, 5, "days"),)),
                                       actor="test").id
    refused = api(school, no_product, {"user": learner, "grant_first": True})
    assert refused.status_code == 422 and refused.json["code"] == "no_product", refused.json
    assert "step 1 cannot be granted" in refused.json["message"]
    school.catalog.set_status(program, "archived", actor="test")
    archived = api(school, program, {"user": learner})
    assert archived.status_code == 422 and archived.json["code"] == "program_archived"
    assert school.enrolments(program) == [] and school.enrolments(no_product) == []


def test_api_reads_an_enrolment_with_its_timeline(school):
    program = school.program(YOGA, ENGLISH)
    other = school.program(ENGLISH, TRAVEL, name="Другая")
    [learner] = school.learners()
    enrolment = api(school, program, {"user": learner}).json["enrolment_id"]
    client = school.app.test_client()
    response = client.get(f"/api/v1/programs/{program}/enrolments/{enrolment}", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    body = response.json
    assert (body["status"], body["step"], body["total_steps"], body["user_id"]) == ("active", 1, 2, learner)
    assert [e["kind"] for e in body["timeline"]] == ["enrolled"] and body["timeline"][0]["at"].endswith("Z")
    assert client.get(f"/api/v1/programs/{other}/enrolments/{enrolment}", headers={"X-API-Key": API_KEY}).status_code == 404
    assert client.get(f"/api/v1/programs/{program}/enrolments/999", headers={"X-API-Key": API_KEY}).status_code == 404
    assert client.get(f"/api/v1/programs/{program}/enrolments/{enrolment}").status_code == 401
    # An administrator's session may read.
    assert school.client.get(f"/api/v1/programs/{program}/enrolments/{enrolment}").status_code == 200


def test_api_is_in_the_openapi_document(school):
    paths = school.app.test_client().get("/openapi.json").json["paths"]
    assert set(paths["/api/v1/programs/{program_id}/enrolments"]["post"]["responses"]) >= {"200", "201", "400", "401",
                                                                                         "404", "422"}
    assert "get" in paths["/api/v1/programs/{program_id}/enrolments/{enrolment_id}"]


def test_program_grants_are_delivered_like_any_other(school):
    """The grant made by the enrol form is a normal outbox grant: the worker delivers it to MemberLux."""
    program = school.program(YOGA, ENGLISH)
    [learner] = school.learners()
    school.post(f"/programs/{program}/enrol", {"user": str(learner), "grant_first": "1"})
    deliverer = GrantDeliverer(school.runtime)
    while deliverer.run_once():
        pass
    assert YOGA in {r.term_id for r in school.runtime.reader.key_rows(learner)}
