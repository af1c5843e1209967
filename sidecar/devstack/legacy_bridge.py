"""A stand-in for the legacy plugin ml-grant-bridge, for rehearsing the bridge's shadow mode.

It grants the way legacy-plugins.md section 1 says the old plugin does, writing key rows directly in the
emulated WordPress database (no REST order, no grant id anywhere):

* the user is found by e-mail (case-insensitive); a new e-mail gets a WordPress user (login from the
  local part), then a key on the registration path: ``date_start`` today, no stacking,
  ``date_registered`` left NULL (1.5, 1.6);
* an existing user gets a key on the normal path: stacked after the latest end of their same-level
  rows, ``date_registered`` today — after a **hard DELETE** of any row of the same user, level,
  duration and units registered today (site-local): the same-day "duplicate" check (1.6);
* ``units`` other than exactly ``days`` are stored as ``months``; ``keys_meta`` gets the activation
  time and ``source`` ``bulk_operations_add``; there is no idempotency (1.7);
* failures after the input check are answered 200 with ``ok: false`` and write no key (1.8).

``fail`` makes the next answers such a failure (``key_generation_failed``, ``key_index_not_found``,
``user_not_found`` for an existing user; ``memberlux_registration_failed`` for a new one, whose
WordPress user is still created, as with a full licence).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from datetime import date
from typing import Any

import requests
import sqlalchemy as sa

from sidecar.devstack.phpdate import add_duration, key_dates
from sidecar.devstack.site_model import MemberLuxSite

log = logging.getLogger(__name__)

#: Headers a mirrored copy keeps (the signature covers the body, the timestamp is its own header).
MIRRORED_HEADERS = ("Content-Type", "X-MLGB-Timestamp", "X-MLGB-Signature")

#: The ``keys_meta.source`` the old plugin's activations carry (an admin bulk grant's label).
LEGACY_SOURCE = "bulk_operations_add"
FAILURES = ("key_generation_failed", "key_index_not_found", "user_not_found", "memberlux_registration_failed")


class LegacyGrantBridge:
    """``POST /wp-json/mlgb/v1/grant`` after its HMAC check: ``handle(body)`` -> (HTTP status, JSON body)."""

    def __init__(self, site: MemberLuxSite, *, fail: str | None = None) -> None:
        if fail is not None and fail not in FAILURES:
            raise ValueError(f"fail must be one of {', '.join(FAILURES)}")
        self.site = site
        self.fail = fail

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        email = str(body.get("email") or "").strip()
        key = body.get("key")
        if not email or not isinstance(key, dict):
            return 400, {"error": "invalid_input"}
        term_id = _int(key.get("term_id"))
        duration = _int(key.get("duration"))
        units = "days" if key.get("units") == "days" else "months"
        user = self.site.find_user_by_email(email)
        if user is not None:
            return self._existing_user(int(user.ID), term_id, duration, units)
        return self._new_user(email, term_id, duration, units)

    # -- the two paths (legacy-plugins.md 1.6) -------------------------------------------------------------

    def _existing_user(self, user_id: int, term_id: int, duration: int, units: str) -> tuple[int, dict[str, Any]]:
        if self.fail in ("key_generation_failed", "key_index_not_found", "user_not_found"):
            return 200, {"ok": False, "status": "error", "error": self.fail, "user_id": user_id, "code": None}
        site = self.site
        now = site.now()
        key_id, code = site.insert_new_key(term_id, duration, units, False, now)
        # The "duplicate check": a same-day row of the same grant is deleted, then the new key is activated anyway.
        keys = site.t["memberlux_term_keys"]
        site.write(sa.delete(keys).where(
            keys.c.user_id == user_id, keys.c.term_id == term_id, keys.c.duration == duration, keys.c.units == units,
            keys.c.date_registered == site.local(now).date().isoformat(), keys.c.id != key_id))
        today = now.date()
        dates = key_dates(site.stack_rows(user_id), term_id, today, duration, units)
        site.activate_key(key_id, user_id, today=today, date_start=dates.date_start, date_end=dates.date_end)
        self._keys_meta(key_id)
        return 200, {"ok": True, "status": "created", "user_id": user_id, "code": code, "error": None}

    def _new_user(self, email: str, term_id: int, duration: int, units: str) -> tuple[int, dict[str, Any]]:
        site = self.site
        now = site.now()
        user = site.create_user(email, now)
        if user is None:
            return 200, {"ok": False, "error": {"ok": False, "status": "user_create_failed"}}
        if self.fail == "memberlux_registration_failed":
            return 200, {"ok": False, "error": {"ok": False, "status": self.fail}}
        key_id, _code = site.insert_new_key(term_id, duration, units, False, now)
        today: date = now.date()
        keys = site.t["memberlux_term_keys"]
        # The registration path: no stacking, date_registered stays NULL (core.md 3.2).
        site.write(sa.update(keys).where(keys.c.id == key_id).values(
            user_id=int(user.ID), status="used", date_start=today.isoformat(),
            date_end=add_duration(today, duration, units).isoformat()))
        self._keys_meta(key_id)
        return 200, {"ok": True}

    def _keys_meta(self, key_id: int) -> None:
        self.site.insert_keys_meta(key_id, {"activation_datetime": self.site.now().strftime("%Y-%m-%d %H:%M:%S"),
                                            "source": LEGACY_SOURCE})


def _int(value: Any) -> int:
    """PHP's ``(int)`` on what WordPress parsed: leading digits, else 0."""
    text = str(value if value is not None else "").strip()
    digits = ""
    for index, char in enumerate(text):
        if char.isdigit() or (index == 0 and char in "+-"):
            digits += char
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


def legacy_hmac(secret: str, timestamp: str, body: bytes) -> str:
    """The old plugin's signature: lowercase hex HMAC-SHA256 of ``timestamp.rawbody`` (legacy-plugins.md 1.3)."""
    return hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + b"." + body, hashlib.sha256).hexdigest()


def mirror_request(url: str, body: bytes, headers: Mapping[str, str], timeout: float = 10.0) -> int | None:
    """A copy of the request to ``url``, as nginx ``mirror`` sends it: its answer is ignored (status or None)."""
    sent = {name: headers[name] for name in MIRRORED_HEADERS if headers.get(name) is not None}
    try:
        return requests.post(url, data=body, headers=sent, timeout=timeout).status_code
    except requests.RequestException as exc:
        log.warning("mirror to %s failed: %s", url, exc)
        return None
