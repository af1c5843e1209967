"""Finding: reminder template preview without limits.

``{{ ('a'*2000000)|wordwrap(1) }}`` pinned a web thread for minutes and ``{{ 'a'*20000000 }}`` answered
20 MB. Rendering is now bounded (sidecar/mail/templates.py): values a template builds, the rendered
output (256 KB) and the work per rendering. The preview shows the reason in the admin's language and
the sending run fails that letter with the reason instead of crashing.

No timings are asserted: each test checks that the bounded path was taken (the limit's error) and
that nothing large came back.
"""

from __future__ import annotations

import html

import pytest

from sidecar.mail import templates
from sidecar.mail.templates import MAX_OUTPUT, TemplateLimitExceeded, render_html, render_text
from sidecar.reminders.run import run_reminders
from sidecar.store.reminder_models import Reminder
from tests.reminders.school import LEVEL, a_sleeper, rows, settings_form

WORDWRAP = "{{ ('a'*2000000)|wordwrap(1) }}"
MULTIPLY = "{{ 'a'*20000000 }}"
PAYLOADS = [
    WORDWRAP, MULTIPLY,
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",   # work, no output
    "{% for x in ('a'*100000)|list %}{% for y in ('a'*100000)|list %}{% endfor %}{% endfor %}",
    "{{ 'a'|center(10**9) }}", "{{ 'x'.ljust(10**9) }}", "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999s'|format(1) }}", "{{ '%*s' % (10**9, 'x') }}", "{{ ('a'*300).replace('a', 'b'*1000) }}",
    "{{ ('a'*100000)|replace('a', 'aaaaaaa') }}", "{{ [1]|batch(10**9, 'x')|list|length }}",
    "{{ 'a\tb'.expandtabs(10**8) }}", "{{ ('line\n'*50000)|indent(100) }}", "{{ range(10**6)|list|length }}",
    "{{ ('ab'*100000) ~ ('ab'*100000) }}{{ ('ab'*100000) + ('ab'*100000) }}",
    "{% for i in range(300) %}{{ 'x'*1000 }}{% endfor %}",                              # output over 256 KB
]


@pytest.mark.parametrize("render", [render_html, render_text], ids=["html", "text"])
@pytest.mark.parametrize("source", PAYLOADS)
def test_template_limits_refuse_expensive_templates(render, source):
    with pytest.raises(TemplateLimitExceeded, match=r"exceeds 256 KB|too much work"):
        render(source, {})


def test_template_limits_the_two_reported_payloads_take_the_bounded_path(monkeypatch):
    """The wordwrap is refused before textwrap runs, the multiplication before the string is built."""
    calls = []
    original = templates._check_binop

    def spy(operator, left, right):
        calls.append((operator, left if not isinstance(left, str) else len(left), right))
        original(operator, left, right)

    monkeypatch.setattr(templates, "_check_binop", spy)
    with pytest.raises(TemplateLimitExceeded, match="exceeds 256 KB"):
        render_html(MULTIPLY, {})
    assert calls == [("*", 1, 20000000)]
    with pytest.raises(TemplateLimitExceeded, match="exceeds 256 KB"):
        render_html(WORDWRAP, {})


def test_template_limits_leave_real_letters_alone():
    letter = ("<p>Здравствуйте, {{ first_name }}!</p>{% for n in range(200) %}<p>Абзац {{ n }}: {{ 'x' * 40 }} "
              "{{ ('%-10s|' % first_name) }}{{ '{:>8}'.format(n) }}{{ first_name|center(20) }}</p>{% endfor %}"
              "{{ (first_name ~ ' ') * 10 }}{{ long|wordwrap(76) }}")
    out = render_html(letter, {"first_name": "Анна", "long": "слово " * 2000})
    assert "Абзац 199" in out and len(out) < MAX_OUTPUT
    assert render_text("{{ a + b }} {{ 2 ** 10 }} {{ 7 * 6 }} {{ 10 // 3 }} {{ 7 % 4 }}", {"a": "x", "b": "y"}) \
        == "xy 1024 42 3 3"


def test_template_limits_output_just_under_the_cap_passes_and_just_over_is_refused():
    assert len(render_text("{{ 'x' * n }}", {"n": MAX_OUTPUT})) == MAX_OUTPUT
    with pytest.raises(TemplateLimitExceeded, match="exceeds 256 KB"):
        render_text("{{ 'x' * n }}{{ 'x' * n }}", {"n": MAX_OUTPUT // 2 + 1})


@pytest.mark.parametrize("payload", [WORDWRAP, MULTIPLY])
def test_template_limits_preview_answers_with_the_error(web, school, payload):
    a_sleeper(school)
    data = settings_form(school, **{"letters.1.body": f"<p>Hi {{{{ first_name }}}}</p>{payload}", "letter": "1"})
    response = web.post(f"/reminders/levels/{LEVEL}/preview", data)
    raw = response.get_data()
    assert len(raw) < MAX_OUTPUT                                        # the page is small: no 20 MB echo
    page = html.unescape(raw.decode("utf-8"))
    assert response.status_code < 500
    assert "Template error: the letter would be longer than 256 KB" in page
    assert "aaaaaaaaaa" not in page


def test_template_limits_preview_message_in_russian(web, school):
    a_sleeper(school)
    web.client.set_cookie("lang", "ru")
    data = settings_form(school, **{"letters.1.body": WORDWRAP, "letter": "1"})
    page = html.unescape(web.post(f"/reminders/levels/{LEVEL}/preview?lang=ru", data,
                                  headers={"Accept-Language": "ru"}).get_data(as_text=True))
    assert "письмо получилось бы длиннее 256 КБ" in page


def test_template_limits_a_letter_over_the_limit_fails_with_the_reason_and_the_run_goes_on(school):
    school.schedule(days=(1, None, None))
    from dataclasses import replace

    from sidecar.monitor.settings import Letter, MonitorSettings

    service = MonitorSettings(school.runtime)
    current = service.effective(LEVEL)
    service.save(replace(current, letters=(Letter(1, "Subject", MULTIPLY), Letter(), Letter())), actor="test")
    school.learner(1, "anna@example.com", first="Анна")
    school.expired(1, days_ago=3)
    run_reminders(school.runtime)                                        # does not raise
    [reminder] = [r for r in rows(school, Reminder) if r.step == 1]
    assert reminder.state == "failed" and reminder.reason == "template"
    assert "exceeds 256 KB" in reminder.last_error
