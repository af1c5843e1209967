"""The one SMTP mailer, against a real SMTP server on loopback."""

from __future__ import annotations

import pytest

from sidecar.config import SmtpSettings
from sidecar.mail.mailer import (
    Mail,
    MailDisabled,
    MailError,
    Mailer,
    MailOutcomeUnknown,
    PermanentMailError,
    RateLimiter,
    TransientMailError,
)
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


# --- the SMTP phase decides: not sent, refused, or unknown ---------------------------------------------

def test_a_connection_dropped_after_the_whole_message_is_an_unknown_outcome(smtp_server):
    host, port, inbox = smtp_server
    inbox.drop_after_data = True
    mail = Mail(to="x@example.com", subject="s", html="h", text="t", message_id="<fixed@example.org>")
    with pytest.raises(MailOutcomeUnknown) as caught:
        mailer_for(host, port).send(mail)
    assert caught.value.message_id == "<fixed@example.org>"
    assert "no reply to the end of the message" in str(caught.value)
    assert len(inbox.messages) == 1, "the server did read the whole message"


def test_no_reply_to_the_end_of_the_message_within_the_timeout_is_an_unknown_outcome(smtp_server):
    host, port, inbox = smtp_server
    inbox.stall_after_data = 3.0
    with pytest.raises(MailOutcomeUnknown, match="timed out"):
        mailer_for(host, port, timeout_seconds=0.5).send(Mail(to="x@example.com", subject="s", html="h", text="t"))
    assert len(inbox.messages) == 1


def test_an_unknown_outcome_is_neither_transient_nor_permanent():
    assert not issubclass(MailOutcomeUnknown, (TransientMailError, PermanentMailError))
    assert issubclass(MailOutcomeUnknown, MailError)


class _Scripted:
    """An aiosmtpd handler that closes the connection at one command, or refuses a recipient."""

    def __init__(self, drop_at: str = "", rcpt_reply: str = "") -> None:
        self.drop_at, self.rcpt_reply, self.received = drop_at, rcpt_reply, 0

    async def handle_MAIL(self, server, session, envelope, address, options):  # noqa: N802
        if self.drop_at == "MAIL":
            server.transport.close()
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: N802
        if self.drop_at == "RCPT":
            server.transport.close()
        if self.rcpt_reply:
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.received += 1
        return "250 OK"


@pytest.fixture
def scripted_server():
    import socket

    from aiosmtpd.controller import Controller

    started = []

    def start(handler: _Scripted) -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


@pytest.mark.parametrize("phase", ["MAIL", "RCPT"])
def test_a_connection_dropped_before_the_message_was_sent_is_transient(scripted_server, phase):
    handler = _Scripted(drop_at=phase)
    port = scripted_server(handler)
    marks = []
    with pytest.raises(TransientMailError):
        mailer_for("127.0.0.1", port).send(Mail(to="x@example.com", subject="s", html="h", text="t"),
                                           before_data=lambda: marks.append("data"))
    assert handler.received == 0 and marks == [], "the DATA phase was never reached"


def test_a_refused_recipient_is_permanent_or_transient_by_its_code_and_data_never_starts(scripted_server):
    marks = []
    for reply, error in (("550 5.1.1 no such user", PermanentMailError), ("450 4.2.1 mailbox busy", TransientMailError)):
        handler = _Scripted(rcpt_reply=reply)
        port = scripted_server(handler)
        with pytest.raises(error):
            mailer_for("127.0.0.1", port).send(Mail(to="x@example.com", subject="s", html="h", text="t"),
                                               before_data=lambda: marks.append("data"))
        assert handler.received == 0
    assert marks == []


def test_before_data_runs_once_after_the_recipient_was_accepted(smtp_server):
    host, port, inbox = smtp_server
    seen = []
    mailer_for(host, port).send(Mail(to="x@example.com", subject="s", html="h", text="t"),
                                before_data=lambda: seen.append(len(inbox.messages)))
    assert seen == [0] and len(inbox.messages) == 1


def test_an_exception_in_before_data_sends_nothing_and_reaches_the_caller_unchanged(smtp_server):
    host, port, inbox = smtp_server

    class StoreDown(Exception):
        pass

    def fail() -> None:
        raise StoreDown("the store is unavailable")

    with pytest.raises(StoreDown):
        mailer_for(host, port).send(Mail(to="x@example.com", subject="s", html="h", text="t"), before_data=fail)
    assert inbox.messages == []


def test_before_data_also_runs_for_the_pickup_directory(tmp_path):
    mailer = Mailer(SmtpSettings(pickup_dir=str(tmp_path / "mail"), from_address="school@example.org"))
    seen = []
    mailer.send(Mail(to="x@example.com", subject="s", html="h", text="t"),
                before_data=lambda: seen.append(list((tmp_path / "mail").glob("*.eml")) if (tmp_path / "mail").exists() else []))
    assert seen == [[]] and len(list((tmp_path / "mail").glob("*.eml"))) == 1


def test_lines_starting_with_a_dot_arrive_unchanged(smtp_server):
    host, port, inbox = smtp_server
    text = ".a line with a leading dot\n.\n..two dots"
    mailer_for(host, port).send(Mail(to="x@example.com", subject="s", html="<p>h</p>", text=text))
    [(_, _, message)] = inbox.messages
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n").rstrip("\n") == text
