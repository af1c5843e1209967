"""The one SMTP mailer: STARTTLS/SSL, authentication, a rate limit, and error classes.

Errors are classified by the SMTP phase they happen in, never by the text of a message:

* anything that goes wrong **before the end of DATA** (the final ``.``) has been sent in full —
  connecting, TLS, login, ``MAIL``, ``RCPT``, ``DATA``, or writing the message — means the server
  cannot have accepted it: ``TransientMailError`` (connection refused, timeouts, 4xx replies; may be
  retried later) or ``PermanentMailError`` (5xx replies such as an unknown recipient; will fail again);
* the server's **reply to the end of DATA** decides the outcome: 2xx sent, 4xx transient refusal,
  5xx permanent refusal;
* a dropped connection, a timeout or any I/O error **after the whole message was sent and before
  that reply arrived** is ``MailOutcomeUnknown``: the server may have taken the message. Callers must
  not send it again by themselves.

smtplib's ``sendmail`` hides that boundary, so the client used here does the DATA phase itself
(:meth:`_PhasedClient.data`). A caller may pass ``before_data``: it runs right before the ``DATA``
command, after the server accepted the sender and recipient, and is where a caller records "this
message may be transmitted from now on"; if it raises, the message is not sent and its exception
propagates unchanged. The caller keeps the ``Message-ID`` we set, so a message can be traced in the
SMTP server's logs.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

from sidecar.config import SmtpSettings


class MailError(Exception):
    pass


class TransientMailError(MailError):
    pass


class PermanentMailError(MailError):
    pass


class MailOutcomeUnknown(MailError):
    """The whole message was sent, but the server's reply to its end never arrived: it may have been
    delivered. Never retried automatically."""

    def __init__(self, text: str, message_id: str = "") -> None:
        super().__init__(text)
        self.message_id = message_id


class MailDisabled(MailError):
    """smtp.host is empty."""


class _CallerAbort(Exception):
    """Carries an exception of the caller's ``before_data`` through the SMTP error mapping."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


_LEADING_DOT = re.compile(rb"(?m)^\.")


class _PhasedClient:
    """smtplib's client with a DATA phase whose end is exact: what fails after the final ``.`` was
    written, before the reply was read, is an unknown outcome."""

    before_data: Callable[[], None] | None = None

    def data(self, msg: bytes):  # smtplib's signature
        client: smtplib.SMTP = self  # type: ignore[assignment]
        if self.before_data is not None:
            try:
                self.before_data()
            except BaseException as exc:  # handed back to the caller untouched
                raise _CallerAbort(exc) from exc
        client.putcmd("data")
        code, reply = client.getreply()
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        payload = _LEADING_DOT.sub(b"..", msg)
        if not payload.endswith(b"\r\n"):
            payload += b"\r\n"
        client.send(payload + b".\r\n")   # raises (nothing accepted) unless every byte was written
        try:
            code, reply = client.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            raise MailOutcomeUnknown(f"no reply to the end of the message: {type(exc).__name__}: {str(exc)[:200]}") from None
        if not 200 <= code < 600:
            raise MailOutcomeUnknown(f"unreadable reply to the end of the message: {code} {reply[:200]!r}")
        return code, reply


class _Client(_PhasedClient, smtplib.SMTP):
    pass


class _SslClient(_PhasedClient, smtplib.SMTP_SSL):
    pass


@dataclass
class Mail:
    to: str
    subject: str
    html: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    message_id: str | None = None   # set by callers that record it before the SMTP transaction


class RateLimiter:
    """At most ``per_minute`` sends in any sliding minute, shared by the threads of one process."""

    def __init__(self, per_minute: int, clock=time.monotonic, sleep=time.sleep) -> None:
        self.per_minute = per_minute
        self.clock, self.sleep = clock, sleep
        self._sent: list[float] = []
        self._lock = threading.Lock()

    def wait(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                self._sent = [t for t in self._sent if now - t < 60]
                if len(self._sent) < self.per_minute:
                    self._sent.append(now)
                    return
                pause = 60 - (now - self._sent[0])
            self.sleep(max(pause, 0.01))


class Mailer:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.max_per_minute)
        self._context: ssl.SSLContext | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.delivers

    def build(self, mail: Mail) -> EmailMessage:
        smtp = self.settings
        message = EmailMessage()
        domain = smtp.from_address.rpartition("@")[2] or "localhost"
        message["Message-ID"] = mail.message_id or make_msgid(domain=domain)
        message["Date"] = formatdate(localtime=False)
        local, _, host = smtp.from_address.partition("@")
        message["From"] = Address(smtp.from_name or "", local, host) if smtp.from_name else smtp.from_address
        message["To"] = mail.to
        message["Subject"] = mail.subject
        for name, value in mail.headers.items():
            message[name] = value
        message.set_content(mail.text)
        message.add_alternative(mail.html, subtype="html")
        return message

    def new_message_id(self) -> str:
        return make_msgid(domain=self.settings.from_address.rpartition("@")[2] or "localhost")

    def send(self, mail: Mail, *, before_data: Callable[[], None] | None = None) -> str:
        """Send one message; returns its Message-ID. ``before_data``: see the module's doc."""
        if not self.enabled:
            raise MailDisabled("e-mail is disabled (smtp.host and smtp.pickup_dir are empty)")
        message = self.build(mail)
        self.send_message(message, before_data=before_data)
        return str(message["Message-ID"])

    def _drop(self, message: EmailMessage) -> None:
        """Pickup-directory delivery: one .eml file per message, written whole or not at all."""
        directory = Path(self.settings.pickup_dir)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            stem = re.sub(r"[^A-Za-z0-9.@-]+", "_", str(message["Message-ID"]).strip("<>"))[:120]
            name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{stem}.eml"
            partial = directory / f".{name}.part"
            partial.write_bytes(message.as_bytes())
            os.replace(partial, directory / name)
        except OSError as exc:
            raise TransientMailError(f"cannot write to pickup_dir {directory}: {exc.strerror or exc}") from None

    def _tls_context(self) -> ssl.SSLContext:
        # Loading the CA bundle costs tens of milliseconds: once per mailer, not once per message.
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    @contextmanager
    def session(self) -> Iterator[smtplib.SMTP]:
        """A connected, secured and authenticated SMTP session, closed on exit."""
        smtp = self.settings
        context = self._tls_context() if smtp.security in ("ssl", "starttls") else None
        if smtp.security == "ssl":
            client: smtplib.SMTP = _SslClient(smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context)
        else:
            client = _Client(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        try:
            client.ehlo()
            if smtp.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password.reveal() if smtp.password else "")
            yield client
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()

    def send_message(self, message: EmailMessage, *, before_data: Callable[[], None] | None = None) -> None:
        if self.settings.pickup_dir:
            if before_data is not None:
                before_data()
            self._drop(message)
            return
        self.limiter.wait()
        try:
            with self.session() as client:
                client.before_data = before_data  # type: ignore[attr-defined]
                refused = client.send_message(message)
        except _CallerAbort as abort:
            raise abort.cause from None
        except MailOutcomeUnknown as exc:
            exc.message_id = str(message["Message-ID"])
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            cls = TransientMailError if all(400 <= c < 500 for c in codes) else PermanentMailError
            raise cls(f"recipient refused: {codes}") from None
        except smtplib.SMTPResponseException as exc:
            cls = TransientMailError if 400 <= exc.smtp_code < 500 else PermanentMailError
            raise cls(f"SMTP {exc.smtp_code}: {exc.smtp_error.decode('utf-8', 'replace')[:200]}") from None
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise TransientMailError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if refused:
            raise PermanentMailError(f"recipient refused: {list(refused.values())[:3]}")
