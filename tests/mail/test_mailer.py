"""The one SMTP mailer, against a real SMTP server on loopback."""

from __future__ import annotations

import pytest

from sidecar.config import SmtpSettings
from sidecar.mail.mailer import Mail, MailDisabled, Mailer, PermanentMailError, RateLimiter, TransientMailError
from sidecar.mail.templates import TemplateError, check, html_to_text, render_html


def mailer_for(host: str, port: int, **extra) -> Mailer:
    return Mailer(SmtpSettings(host=host, port=port, security="none", from_address="school@example.org",
                               from_name="Онлайн-школа", **extra))


def test_sends_multipart_utf8_message_with_message_id(smtp_server):
    host, port, inbox = smtp_server
    message_id = mailer_for(host, port).send(Mail(to="learner@example.com", subject="Доступ открыт ✓",
                                                 html="<p>Привет, <b>Анна</b></p>", text="Привет, Анна"))
    [(sender, recipients, message)] = inbox.messages
    assert sender == "school@example.org" and recipients == ["learner@example.com"]
    assert message["Subject"] == "Доступ открыт ✓"
    assert message["Message-ID"] == message_id and message_id.endswith("@example.org>")
    assert "Онлайн-школа" in str(message["From"])
    parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert parts["text/plain"].strip() == "Привет, Анна"
    assert "<b>Анна</b>" in parts["text/html"]


def test_server_down_is_transient():
    with pytest.raises(TransientMailError):
        mailer_for("127.0.0.1", 9).send(Mail(to="x@example.com", subject="s", html="h", text="t"))


def test_5xx_reply_is_permanent_and_4xx_transient(smtp_server):
    host, port, inbox = smtp_server
    inbox.fail_with = (550, "mailbox unavailable")
    with pytest.raises(PermanentMailError):
        mailer_for(host, port).send(Mail(to="x@example.com", subject="s", html="h", text="t"))
    inbox.fail_with = (451, "try later")
    with pytest.raises(TransientMailError):
        mailer_for(host, port).send(Mail(to="x@example.com", subject="s", html="h", text="t"))


def test_disabled_without_host():
    with pytest.raises(MailDisabled):
        Mailer(SmtpSettings()).send(Mail(to="x@example.com", subject="s", html="h", text="t"))


def test_rate_limit_waits_for_the_window():
    now = [0.0]
    slept = []
    limiter = RateLimiter(2, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    limiter.wait()
    limiter.wait()
    limiter.wait()
    assert slept and round(sum(slept)) == 60


def test_templates_are_sandboxed_and_escaped():
    assert render_html("<p>{{ name }}</p>", {"name": "<script>"}) == "<p>&lt;script&gt;</p>"
    with pytest.raises(TemplateError):
        render_html("{{ ''.__class__.__mro__ }}", {})
    with pytest.raises(TemplateError):
        render_html("{{ missing }}", {})
    with pytest.raises(TemplateError) as caught:
        check("line one\n{% if x %}unclosed")
    assert caught.value.line == 2


def test_html_to_text_keeps_links():
    assert html_to_text('<p>Go <a href="https://s.example/x">here</a></p><p>Bye</p>') == "Go here (https://s.example/x)\nBye"


def test_pickup_dir_writes_one_complete_eml_per_message(tmp_path):
    import email
    from email import policy

    mailer = Mailer(SmtpSettings(pickup_dir=str(tmp_path / "mail"), from_address="school@example.org"))
    assert mailer.enabled
    message_id = mailer.send(Mail(to="learner@example.com", subject="Привет", html="<p>Текст</p>", text="Текст"))
    [written] = list((tmp_path / "mail").iterdir())
    assert written.suffix == ".eml" and not written.name.startswith(".")
    parsed = email.message_from_bytes(written.read_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == message_id and parsed["Subject"] == "Привет"


def test_unwritable_pickup_dir_is_transient(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    mailer = Mailer(SmtpSettings(pickup_dir=str(blocker / "mail"), from_address="school@example.org"))
    with pytest.raises(TransientMailError, match="cannot write to pickup_dir"):
        mailer.send(Mail(to="x@example.com", subject="s", html="h", text="t"))
