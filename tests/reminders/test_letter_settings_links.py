"""The reminders section leads to each level's letter settings: a "Letter settings" tab listing every level's
letters as a run would send them (and a preview of its first letter, when it has one), a link per level on
the approvals page, and one on the history filtered to a level."""

from __future__ import annotations

import re

from tests.reminders.school import LEVEL, OTHER_LEVEL, Browser, a_sleeper

SETTINGS = f'href="/monitor/levels/{LEVEL}/settings"'


def _row(page: str, level: int) -> str:
    found = re.search(rf'<tr class="level-row [a-z]+" data-level="{level}">(.*?)</tr>', page, re.S)
    assert found, f"no row for level {level}"
    return found.group(1)


def test_every_reminders_page_has_the_letter_settings_tab(school):
    web = Browser(school)
    for url in ("/reminders", "/reminders/digests", "/reminders/approvals", "/reminders/unsubscribes"):
        assert 'href="/reminders/settings"' in web.get(url), url
    page = web.get("/reminders/settings?lang=en")
    assert re.search(r'<a href="/reminders/settings" class="active" aria-current="page">Letter settings</a>', page)
    assert "Настройки писем" in web.get("/reminders/settings?lang=ru")


def test_the_tab_shows_each_level_s_schedule_as_a_run_reads_it(school):
    school.schedule((3, None, 30), admin_days=7)   # letter 2 off; the digest 7 days after the last letter
    web = Browser(school)
    page = web.get("/reminders/settings?lang=en")
    row = _row(page, LEVEL)
    assert re.findall(r'<td class="num nowrap letter">(.*?)</td>', row) == [
        "day 3", '<span class="muted">—</span>', "day 30"]
    assert "last letter + 7" in row and ">on<" in row
    assert SETTINGS in row and f'href="/reminders/levels/{LEVEL}/preview"' in row
    quiet = _row(page, OTHER_LEVEL)   # never configured: monitoring off, no letter
    assert ">off<" in quiet and "day " not in quiet
    assert f'href="/monitor/levels/{OTHER_LEVEL}/settings"' in quiet
    assert "день 3" in _row(web.get("/reminders/settings?lang=ru"), LEVEL)


def test_approvals_and_a_level_s_history_link_to_its_letters(school):
    school.schedule()
    web = Browser(school)
    approvals = web.get("/reminders/approvals?lang=en")
    level_row = re.search(rf'<tr class="level \w+" data-level="{LEVEL}">(.*?)</tr>', approvals, re.S)
    assert level_row and re.search(rf'{SETTINGS} class="settings-link letters-link"[^>]*>Letters</a>',
                                   level_row.group(1))
    assert SETTINGS not in web.get("/reminders?lang=en")   # all levels: no single level to link
    history = web.get(f"/reminders?level={LEVEL}&lang=ru")
    assert re.search(rf'{SETTINGS} class="letters-link"[^>]*>Письма: Английский A1</a>', history)


def test_each_preview_link_opens_a_letter_the_level_sends(school):
    a_sleeper(school)                               # someone to preview with
    school.schedule((None, 10, 30), admin_days=7)   # letter 1 off: the preview opens on letter 2
    web = Browser(school)
    page = web.get("/reminders/settings?lang=en")
    assert f'href="/reminders/levels/{LEVEL}/preview?letter=2"' in _row(page, LEVEL)
    assert "preview" not in _row(page, OTHER_LEVEL)   # no letter at all: nothing to preview
    links = re.findall(r'href="(/reminders/levels/\d+/preview[^"]*)"', page)
    assert links
    for link in links:
        response = web.client.get(link)
        assert response.status_code == 200 and '<option value="2" selected>' in response.get_data(as_text=True), link
