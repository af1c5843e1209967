"""PHP's file sessions as MemberLux uses them: ``session_start()`` on every request (core.md 13).

PHP locks a session's file from ``session_start()`` until the request ends, so two requests that
carry the same ``PHPSESSID`` run one after the other. The lock belongs to the PHP worker, not to the
HTTP exchange: a request whose caller gave up still holds it until its work is done.

An unknown or missing ``PHPSESSID`` gets a new session (PHP's strict mode), whose id the answer
sets as a cookie.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from dataclasses import dataclass, field

__all__ = ["PhpSession", "SessionStore"]

#: PHP's ``session.gc_maxlifetime`` default: idle sessions are collected after 24 minutes.
GC_MAXLIFETIME = 1440.0
_ID_ALPHABET = string.ascii_lowercase + string.digits


@dataclass
class _Stored:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)


@dataclass
class PhpSession:
    """One request's hold on a session."""

    session_id: str
    #: True when this request created the session (the answer must set the cookie).
    created: bool
    _stored: _Stored = field(repr=False)
    _held: bool = field(default=True, repr=False)

    def close(self) -> None:
        """``session_write_close()`` when the request's work ends; safe to call twice."""
        if self._held:
            self._held = False
            self._stored.last_used = time.monotonic()
            self._stored.lock.release()


class SessionStore:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._sessions: dict[str, _Stored] = {}

    def start(self, cookie: str | None) -> PhpSession:
        """``session_start()``: waits for the session's lock for as long as it takes, like PHP's flock."""
        with self._guard:
            self._collect()
            stored = self._sessions.get(cookie) if cookie else None
            created = stored is None
            if stored is None:
                cookie = "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))
                stored = self._sessions[cookie] = _Stored()
            stored.last_used = time.monotonic()
        assert cookie is not None
        stored.lock.acquire()
        return PhpSession(session_id=cookie, created=created, _stored=stored)

    def known(self, session_id: str) -> bool:
        with self._guard:
            return session_id in self._sessions

    def _collect(self) -> None:
        cutoff = time.monotonic() - GC_MAXLIFETIME
        for sid in [sid for sid, s in self._sessions.items() if s.last_used < cutoff and not s.lock.locked()]:
            del self._sessions[sid]
