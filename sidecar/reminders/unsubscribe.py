"""Unsubscribe: signed per-learner links, RFC 8058 one-click headers, and the list in our store.

The link carries only a signature over the user id (``itsdangerous``, salted for this purpose), so
it cannot be forged or turned into another learner's link, and it never expires: an old letter's
link must still work. Following the link shows a confirmation page (mail scanners fetch links; a
GET never unsubscribes); the page's button and mail clients' one-click POST do.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer

from sidecar.store import audit
from sidecar.store.db import unit_of_work
from sidecar.store.reminder_models import Unsubscribe

_SALT = "mlsidecar.reminders.unsubscribe"


class LinkUnavailable(RuntimeError):
    """web.public_url or web.secret_key is missing: no letter may go out without a working link."""


class Links:
    def __init__(self, public_url: str, secret: str) -> None:
        if not public_url or not secret:
            raise LinkUnavailable("reminders need web.public_url and web.secret_key to build unsubscribe links")
        self.public_url = public_url.rstrip("/")
        self._serializer = URLSafeSerializer(secret, salt=_SALT)

    def token(self, user_id: int) -> str:
        return str(self._serializer.dumps(int(user_id)))

    def url(self, user_id: int) -> str:
        return f"{self.public_url}/unsubscribe/{self.token(user_id)}"

    def user_id(self, token: str) -> int | None:
        """The user a token was made for, or None when it was not made by us."""
        try:
            value = self._serializer.loads(token)
        except BadSignature:
            return None
        return value if isinstance(value, int) and value > 0 else None

    def headers(self, user_id: int) -> dict[str, str]:
        return {"List-Unsubscribe": f"<{self.url(user_id)}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def unsubscribed_ids(session: sa.orm.Session, user_ids: list[int] | None = None) -> set[int]:
    stmt = sa.select(Unsubscribe.user_id)
    if user_ids is not None:
        found: set[int] = set()
        for start in range(0, len(user_ids), 500):
            found.update(session.scalars(stmt.where(Unsubscribe.user_id.in_(user_ids[start:start + 500]))))
        return found
    return set(session.scalars(stmt))


def unsubscribe(sessions, user_id: int, *, email: str, source: str, actor: str, at: datetime) -> bool:
    """Record the wish; True when it is new (a repeated click changes nothing)."""
    with unit_of_work(sessions) as session:
        if session.get(Unsubscribe, user_id) is not None:
            return False
        session.add(Unsubscribe(user_id=user_id, email=email[:200], at=at, source=source, actor=actor[:100]))
        audit.record(session, subject_type="learner", subject_id=str(user_id), action="reminders.unsubscribed",
                     at=at, actor=actor, source=source)
    return True


def resubscribe(sessions, user_id: int, *, actor: str, at: datetime) -> bool:
    with unit_of_work(sessions) as session:
        row = session.get(Unsubscribe, user_id)
        if row is None:
            return False
        session.delete(row)
        audit.record(session, subject_type="learner", subject_id=str(user_id), action="reminders.resubscribed",
                     at=at, actor=actor, unsubscribed_at=row.at.isoformat(), source=row.source)
    return True
