"""Reminder templates: legacy tokens, checks with the line, rendering, escaping."""

from __future__ import annotations

import pytest
from markupsafe import Markup

from sidecar.domain.messages import Message
from sidecar.mail.templates import TemplateError, evaluate, render_text
from sidecar.reminders.letters import (
    DIGEST_VARIABLES,
    LEARNER_VARIABLES,
    YesNo,
    check,
    learner_table,
    render_digest,
    render_learner_letter,
    translate_legacy,
)

VARIABLES = {name: f"<{name}>" for name in LEARNER_VARIABLES} | {"first_name": "Анна <b>", "course_name": "Английский"}


def test_legacy_tokens_become_variables_and_both_syntaxes_render_alike():
    assert translate_legacy("Привет [user_login], [course_name] [unknown]") == \
        "Привет {{ user_login }}, {{ course_name }} [unknown]"
    legacy = render_learner_letter("[course_name]", "<p>[first_name] [course_name]</p>", VARIABLES,
                                   footer_html="", footer_text="")
    modern = render_learner_letter("{{course_name}}", "<p>[first_name] {{course_name}}</p>", VARIABLES,
                                   footer_html="", footer_text="")
    assert legacy.subject == modern.subject == "Английский"


def test_learner_values_are_escaped_in_html_not_in_the_text_part():
    rendered = render_learner_letter("Привет, {{ first_name }}", "<p>{{ first_name }}</p>", VARIABLES,
                                     footer_html="<p>f</p>", footer_text="f")
    assert "Анна &lt;b&gt;" in rendered.html and rendered.subject == "Привет, Анна <b>"
    assert rendered.text.startswith("Анна <b>") and rendered.text.endswith("-- \nf")


def test_subject_is_one_line_whatever_the_template():
    rendered = render_learner_letter("A\n{{ course_name }}\r\nB", "x", VARIABLES, footer_html="", footer_text="")
    assert rendered.subject == "A Английский B"


def test_unknown_variable_is_refused_with_its_line():
    with pytest.raises(TemplateError) as caught:
        check("<p>Hello</p>\n<p>{{ first_name }}</p>\n<p>{{ coupon }}</p>", LEARNER_VARIABLES)
    assert caught.value.line == 3 and "unknown variable 'coupon'" in str(caught.value)
    assert caught.value.said.code == "templates.unknown_variable" and caught.value.said.params["name"] == "coupon"


def test_syntax_error_is_refused_with_its_line():
    with pytest.raises(TemplateError) as caught:
        check("line one\n{% if first_name %}\nno end", LEARNER_VARIABLES)
    assert caught.value.line == 2 and "'endif'" in str(caught.value)
    assert caught.value.said.code == "templates.syntax" and "'endif'" in caught.value.said.params["detail"]


@pytest.mark.parametrize(("source", "code", "english"), [
    ("{{ 'a'*20000000 }}", "templates.too_large", "template output exceeds 256 KB"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "templates.too_much_work",
     "template does too much work"),
    ("{{ range(10**6)|list|length }}", "templates.range_too_long",
     "template does too much work (range is limited to 10000 numbers)"),
    ("{{ first_name.nothing }}", "templates.undefined", "'str object' has no attribute 'nothing'"),
    ("{{ first_name.__class__ }}", "templates.failed", None),
    ("{{ first_name }", "templates.syntax", "line 1: unexpected '}'"),
])
def test_a_template_that_fails_to_render_says_why_as_a_code(source, code, english):
    """The reason is a message for the pages; its English is the exception's text, as the logs print it."""
    with pytest.raises(TemplateError) as caught:
        render_text(source, dict(VARIABLES))
    assert caught.value.said.code == code, caught.value
    if english is not None:
        assert str(caught.value) == english


def test_an_undefined_expression_says_so_as_a_code():
    with pytest.raises(TemplateError) as caught:
        evaluate("nothing_here", {})
    assert caught.value.said == Message("templates.undefined", {"detail": "'nothing_here' is undefined"})


def test_sandbox_refuses_reaching_into_python():
    with pytest.raises(TemplateError):
        render_learner_letter("x", "{{ first_name.__class__.__mro__ }}", VARIABLES, footer_html="", footer_text="")


def test_yes_no_prints_a_word_and_tests_as_truth():
    assert str(YesNo(True, "ru")) == "да" and str(YesNo(False, "en")) == "no"
    rendered = render_learner_letter("{% if is_bundle_course %}bundle{% else %}single{% endif %} {{ is_bundle_course }}",
                                     "x", {**VARIABLES, "is_bundle_course": YesNo(False, "ru")},
                                     footer_html="", footer_text="")
    assert rendered.subject == "single нет"


def test_digest_adds_the_learner_table_unless_the_body_lists_learners_itself():
    learners = [{"user_id": 7, "user_email": "a@example.com", "first_name": "Анна", "last_name": "<Ли>",
                 "expired_date": "1 ноября 2026", "days_since_expiry": 40}]
    variables = {"learners": learners, "learner_table": learner_table(learners, "ru"), "learner_count": 1,
                 "course_name": "Курс", "user_email": "a@example.com"}
    plain = render_digest("[course_name]", "<p>Итого {{ learner_count }}: [user_email]</p>", variables)
    assert "<table" in plain.html and "&lt;Ли&gt;" in plain.html and "Итого 1: a@example.com" in plain.html
    assert "a@example.com" in plain.text and "Доступ закончился" in plain.text
    own = render_digest("s", "{% for l in learners %}{{ l.user_email }};{% endfor %}", variables)
    assert "<table" not in own.html and own.html == "a@example.com;"
    assert isinstance(variables["learner_table"], Markup)


def test_every_documented_digest_variable_is_checked_as_known():
    check(" ".join("{{ " + name + " }}" for name in DIGEST_VARIABLES), DIGEST_VARIABLES)
    check(" ".join(f"[{name}]" for name in ("user_email", "user_login", "course_name", "expired_date",
                                              "is_bundle_course", "bundle_name")), LEARNER_VARIABLES)


def test_every_variable_also_works_in_the_bracket_style_and_other_brackets_stay():
    rendered = render_learner_letter("[first_name] [days_since_expiry]", "<p>[first_name] [not_a_variable]</p>",
                                     {**VARIABLES, "days_since_expiry": 3}, footer_html="", footer_text="")
    assert rendered.subject == "Анна <b> 3" and "[not_a_variable]" in rendered.html
