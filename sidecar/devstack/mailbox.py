"""The emulated site's outgoing mail (``wp_mail``), captured instead of sent.

Every letter lands in memory (``GET /devstack/mail``) and, with a ``mail_dir``, as an ``.eml`` file
there, so a demo user can open what the site would have sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

__all__ = ["Mail", "Mailbox"]


@dataclass(frozen=True)
class Mail:
    number: int
    kind: str
    to: str
    subject: str
    text: str
    sent_at: datetime
    order_id: int | None = None
    sender: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"number": self.number, "kind": self.kind, "order_id": self.order_id, "from": self.sender,
                "to": self.to, "subject": self.subject, "text": self.text, "sent_at": self.sent_at.isoformat()}

    def as_eml(self) -> bytes:
        message = EmailMessage()
        message["From"] = self.sender or "WordPress <wordpress@localhost>"
        message["To"] = self.to
        message["Subject"] = self.subject
        message["Date"] = format_datetime(self.sent_at)
        message["Message-ID"] = make_msgid(domain="devstack.invalid")
        message["X-Devstack-Kind"] = self.kind
        if self.order_id is not None:
            message["X-Devstack-Order"] = str(self.order_id)
        message.set_content(self.text)
        return message.as_bytes()


class Mailbox:
    def __init__(self, mail_dir: str | Path | None = None):
        self.mail_dir = Path(mail_dir) if mail_dir is not None else None
        self._lock = threading.Lock()
        self._mails: list[Mail] = []

    def send(self, *, kind: str, to: str, subject: str, text: str, sent_at: datetime, order_id: int | None = None,
             sender: str = "") -> Mail:
        with self._lock:
            mail = Mail(number=len(self._mails) + 1, kind=kind, to=to, subject=subject, text=text, sent_at=sent_at,
                        order_id=order_id, sender=sender)
            self._mails.append(mail)
        if self.mail_dir is not None:
            self.mail_dir.mkdir(parents=True, exist_ok=True)
            stamp = sent_at.strftime("%Y%m%dT%H%M%S")
            (self.mail_dir / f"{stamp}-{mail.number:05d}-{kind}.eml").write_bytes(mail.as_eml())
        return mail

    def all(self, *, order_id: int | None = None) -> list[Mail]:
        """Letters sent so far, oldest first (newest last)."""
        with self._lock:
            mails = list(self._mails)
        return [m for m in mails if order_id is None or m.order_id == order_id]

    def clear(self) -> None:
        with self._lock:
            self._mails.clear()
