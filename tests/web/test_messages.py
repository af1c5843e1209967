"""Every code the domain and the imports can report has a wording in both languages, with its values
shown (level ids as names); a message that cannot be worded is shown in English rather than lost."""

from __future__ import annotations

import re

import pytest
from flask import Flask, g

from sidecar.domain.messages import ENGLISH, Message
from sidecar.programs import labels
from sidecar.web.messages import TEXTS, say, word
from tests.message_samples import LEVEL_ID, LEVEL_NAME, sample, samples, shown_values

CYRILLIC = re.compile("[а-яё]", re.I)


class Names:
    level_label = staticmethod(labels.level_label({LEVEL_ID: LEVEL_NAME}))
    term = staticmethod(labels.term)


def _in_language(render):
    app = Flask(__name__)

    def worded(message, language: str) -> str:
        with app.app_context():
            g.language = language
            return render(message, Names(), labels.field_label)
    return worded


@pytest.fixture
def in_language():
    """As a page shows a message."""
    return _in_language(say)


@pytest.fixture
def wording():
    """The code's own wording, failing loudly where :func:`say` would fall back to English."""
    return _in_language(word)


def test_every_code_of_the_registry_has_a_wording_here_and_nothing_else_has():
    assert sorted(TEXTS) == sorted(ENGLISH)


@pytest.mark.parametrize("message", samples(), ids=lambda m: m.code)
def test_each_code_is_worded_in_both_languages_with_its_values(message, wording):
    english = wording(message, "en")
    russian = wording(message, "ru")
    words = {language: text.replace(LEVEL_NAME, "") for language, text in (("en", english), ("ru", russian))}
    assert CYRILLIC.search(words["ru"]) and not CYRILLIC.search(words["en"]), words
    for text in (english, russian):
        assert "{" not in text, text
        for value in shown_values(message):
            assert value in text, (value, text)
    if "level" in message.params:
        assert f"«{LEVEL_NAME}» (#{LEVEL_ID})" in russian
    if "duration" in message.params:
        assert "3 months" in english and "3 месяца" in russian
    if "limit" in message.params:
        assert "3660 months" in english and "3660 месяцев" in russian


def test_a_message_of_a_form_field_names_the_field_as_the_form_does(in_language):
    said = Message("programs.unknown_level", {"id": 999}, field="steps.2.term_id")
    assert in_language(said, "ru") == "Шаг 2: уровень: Уровня доступа №999 на сайте нет."
    assert in_language(said, "en") == "Step 2: level: Access level #999 does not exist on the site."


@pytest.mark.parametrize(("days", "english", "russian"), [
    (1, "(1 day)", "(1 день)"), (3, "(3 days)", "(3 дня)"), (21, "(21 days)", "(21 день)")])
def test_a_letter_s_days_take_the_plural_form_of_their_count(in_language, days, english, russian):
    said = Message("settings.not_later", {"n": 1, "days": days})
    assert in_language(said, "en") == f"Must be later than letter 1 {english}."
    assert in_language(said, "ru") == f"Должно быть позже письма 1 {russian}."


def test_what_cannot_be_worded_is_shown_in_english_as_written(in_language, monkeypatch):
    assert in_language("step 2 cannot be granted: no product", "ru") == "step 2 cannot be granted: no product"
    monkeypatch.delitem(TEXTS, "programs.keep_steps")            # a code added without its wording
    assert in_language(sample("programs.keep_steps"), "ru") == "learners are on step 6: keep at least 6 steps"
    odd = Message("programs.no_certificates", {"level": {"id": 10}})   # no level id: a value of another version
    assert in_language(odd, "ru") == "level {'id': 10} issues no certificates: learners cannot pass this step"
