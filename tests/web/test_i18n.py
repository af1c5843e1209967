"""Every UI string is a gettext msgid with a Russian translation; plural forms, dates and numbers follow the
language; the language follows the browser unless chosen."""

import re
import tomllib
from datetime import date
from fnmatch import fnmatch
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po
from markupsafe import Markup

from sidecar.reminders.context import LETTER_DATE
from sidecar.web.i18n import (
    catalog,
    format_date,
    format_number,
    gettext,
    lazy_gettext,
    markup_gettext,
    negotiate,
    ngettext,
    pgettext,
)

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "sidecar" / "web" / "translations" / "ru" / "LC_MESSAGES" / "messages.po"
PLACEHOLDER = re.compile(r"\{(\w*)[^{}]*\}")


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """What `pybabel extract -F babel.cfg -o messages.pot .` finds, run from the repository root."""
    pot = tmp_path_factory.mktemp("pot") / "messages.pot"
    import os

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        CommandLineInterface().run(["pybabel", "-q", "extract", "-F", "babel.cfg", "-o", str(pot), "."])
    finally:
        os.chdir(here)
    with pot.open("rb") as f:
        return read_po(f)


@pytest.fixture(scope="module")
def russian():
    with PO.open("rb") as f:
        return read_po(f, locale="ru")


def test_extraction_finds_the_texts_of_python_and_templates(extracted):
    ids = {m.id if isinstance(m.id, str) else m.id[0] for m in extracted if m.id}
    assert "System status" in ids                                 # a template's _()
    assert "Enter your login and password." in ids                # Python gettext()
    assert "{n} day" in ids                                       # ngettext, in a template and in Python
    assert ("letter", "yes") in {(m.context, m.id) for m in extracted}   # pgettext with its context
    assert len(ids) > 900


def translation_problems(extracted, russian) -> list[str]:
    problems = []
    for message in extracted:
        if not message.id:
            continue
        found = russian.get(message.id, context=message.context)
        name = f"{message.context or ''}|{message.id if isinstance(message.id, str) else message.id[0]}"
        if found is None or found.fuzzy:
            problems.append(f"no Russian (or fuzzy): {name}")
            continue
        if message.pluralizable:
            wanted = placeholders(message.id[1]) | {"n"}
            forms = found.string if isinstance(found.string, tuple) else ()
            if len(forms) != 3 or not all(forms):
                problems.append(f"Russian needs three plural forms: {name}")
            problems += [f"placeholders differ in form {i}: {name}" for i, form in enumerate(forms)
                         if placeholders(form) | {"n"} != wanted]
        elif not found.string or placeholders(found.string) != placeholders(message.id):
            problems.append(f"empty or other placeholders: {name}")
    return problems


def test_every_extracted_text_has_a_russian_translation_with_the_same_placeholders(extracted, russian):
    assert translation_problems(extracted, russian) == []


def test_the_catalog_keeps_no_text_the_code_no_longer_uses(extracted, russian):
    used = {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in extracted if m.id}
    stale = [(m.context, m.id) for m in russian if m.id and (m.context, m.id if isinstance(m.id, str) else m.id[0]) not in used]
    assert stale == []


def test_the_check_names_a_missing_a_fuzzy_and_a_mistyped_translation(extracted):
    with PO.open("rb") as f:
        broken = read_po(f, locale="ru")
    broken.get("System status").string = ""
    broken.get("Signed in as {name}").flags.add("fuzzy")
    broken.get("{n} day").string = ("{n} день", "{n} дня", "{count} дней")
    broken.delete("Enter your login and password.")
    assert sorted(translation_problems(extracted, broken)) == [
        "empty or other placeholders: |System status",
        "no Russian (or fuzzy): |Enter your login and password.",
        "no Russian (or fuzzy): |Signed in as {name}",
        "placeholders differ in form 2: |{n} day",
    ]


def test_the_catalog_is_shipped_with_the_package():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]
    relative = PO.relative_to(ROOT / "sidecar").as_posix()
    assert any(fnmatch(relative, pattern) for pattern in data["sidecar"])
    assert not list(PO.parent.glob("*.mo"))  # compiled in memory from the .po: no stale .mo can win


def test_russian_plural_forms():
    assert [ngettext("{n} day", "{n} days", n, "ru") for n in (1, 2, 5, 21)] == ["1 день", "2 дня", "5 дней", "21 день"]
    assert [ngettext("{n} month", "{n} months", n, "ru") for n in (1, 3, 11, 22)] == \
        ["1 месяц", "3 месяца", "11 месяцев", "22 месяца"]
    assert [ngettext("{n} learner", "{n} learners", n, "ru") for n in (1, 2, 5, 21)] == \
        ["1 ученик", "2 ученика", "5 учеников", "21 ученик"]


def test_english_plural_forms():
    assert [ngettext("{n} month", "{n} months", n, "en") for n in (1, 2, 21)] == ["1 month", "2 months", "21 months"]


def test_one_english_text_with_two_russian_ones_is_told_apart_by_its_context():
    assert pgettext("nav", "Status", "ru") == "Состояние"
    assert pgettext("grants.filter.status", "Status", "ru") == "Статус"
    assert pgettext("nav", "Status", "en") == pgettext("grants.filter.status", "Status", "en") == "Status"


def test_placeholders_are_filled_and_an_unknown_text_stays_english():
    assert gettext("Signed in as {name}", "ru", name="anna") == "Вы вошли как anna"
    assert gettext("Signed in as {name}", "en", name="anna") == "Signed in as anna"
    assert gettext("No such text anywhere", "ru") == "No such text anywhere"


def test_lazy_texts_are_translated_when_shown():
    text = lazy_gettext("System status")
    assert text.format("ru") == "Состояние системы" and str(text) == "System status"  # no request: English


def test_markup_variant_escapes_the_text_and_plain_values():
    out = markup_gettext("Signed in as {name}", "en", name="<b>")
    assert isinstance(out, Markup) and out == "Signed in as &lt;b&gt;"
    assert markup_gettext("Signed in as {name}", "en", name=Markup("<b>x</b>")) == "Signed in as <b>x</b>"


def test_letters_dates_read_naturally_in_each_language():
    day = date(2026, 11, 26)
    assert format_date(day, LETTER_DATE["ru"], "ru") == "26 ноября 2026"
    assert format_date(day, LETTER_DATE["en"], "en") == "November 26, 2026"
    assert format_date(day, "long", "ru") == "26 ноября 2026\u202fг."
    assert format_date(None) == "—"


def test_numbers_follow_the_language():
    assert format_number(12345.5, "en") == "12,345.5"
    assert format_number(12345.5, "ru") == "12\xa0345,5"


def test_the_catalog_of_an_unknown_language_is_english():
    assert catalog("de").gettext("System status") == "System status"


def test_browser_preference_picks_the_language():
    assert negotiate("ru-RU,ru;q=0.9,en;q=0.8", None) == "ru"
    assert negotiate("de-DE,en;q=0.5,ru;q=0.4", None) == "en"
    assert negotiate("fr", None) == "en"
    assert negotiate(None, None) == "en"
    assert negotiate("ru;q=bogus,en;q=0.1", None) == "en"


def test_explicit_choice_beats_the_browser():
    assert negotiate("ru", "en") == "en"
    assert negotiate("en", "ru") == "ru"
    assert negotiate("en", "xx") == "en"


def test_pages_follow_the_browser_then_the_choice_kept_in_a_cookie(runtime):
    from sidecar.app import create_app

    client = create_app(runtime, testing=True).test_client()
    page = client.get("/login", headers={"Accept-Language": "ru-RU,ru;q=0.9"})
    assert page.headers["Content-Language"] == "ru" and "Вход" in page.get_data(as_text=True)
    chosen = client.get("/login?lang=en", headers={"Accept-Language": "ru"})
    assert chosen.headers["Content-Language"] == "en" and "mls_lang=en" in chosen.headers["Set-Cookie"]
    kept = client.get("/login", headers={"Accept-Language": "ru"})        # the cookie beats the browser
    assert kept.headers["Content-Language"] == "en" and "Sign in" in kept.get_data(as_text=True)
    ignored = client.get("/login?lang=xx", headers={"Accept-Language": "ru"})
    assert ignored.headers["Content-Language"] == "en" and "Set-Cookie" not in ignored.headers


def test_the_status_page_writes_today_as_the_language_does(runtime, admin_pages):
    app, client = admin_pages.signed_in(runtime)
    page = next(rule.rule for rule in app.url_map.iter_rules() if rule.endpoint.startswith("home."))  # the status page
    today = runtime.clock.today_utc()
    russian = client.get(f"{page}?lang=ru").get_data(as_text=True)
    english = client.get(f"{page}?lang=en").get_data(as_text=True)
    assert f'<time datetime="{today.isoformat()}">{format_date(today, "long", "ru")}</time>' in russian
    assert f'<time datetime="{today.isoformat()}">{format_date(today, "long", "en")}</time>' in english
    assert format_date(today, "long", "en").endswith(str(today.year)) and "г." in format_date(today, "long", "ru")
