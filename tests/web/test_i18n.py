"""Every UI string exists in Russian and English; the language follows the browser unless chosen."""

from sidecar.web.i18n import CATALOGS, negotiate, gettext


def test_both_catalogs_define_the_same_keys():
    assert set(CATALOGS["ru"]) == set(CATALOGS["en"])


def test_no_translation_is_empty_or_left_in_the_other_language():
    for key in CATALOGS["en"]:
        assert CATALOGS["en"][key].strip() and CATALOGS["ru"][key].strip()
    assert sum(CATALOGS["ru"][k] == CATALOGS["en"][k] for k in CATALOGS["en"]) <= 2  # brand names may match


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


def test_translate_gives_the_language_asked_for():
    assert gettext("System status", "ru") == "Состояние системы"
    assert gettext("System status", "en") == "System status"
