"""What the bridge tests share: credentials of the test app, request bodies, and ``Bridge`` — the
sidecar app wired to the emulated site, with read access to both databases. Fixtures that build it
live in ``conftest.py``.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import date, datetime, timezone
from urllib.parse import urlencode

import requests
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from sidecar.app import create_app
from sidecar.bridge.auth import legacy_signature
from sidecar.bridge.outbox import GrantDeliverer
from sidecar.store.grant_models import Grant
from tests.bridge.fake_amocrm import make_contact, make_lead
from tests.strong_secrets import strong_secret


HMAC_SECRET = "mlgb-shared-secret-for-tests-0123456789"
API_KEYS = {"crm": "crm-api-key-aaaaaaaaaaaaaaaaaaaaaaaa", "shop": "shop-api-key-bbbbbbbbbbbbbbbbbbbbbbbb"}
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-for-tests").decode()
LEGACY_URL = "/wp-json/mlgb/v1/grant"
API_URL = "/api/v1/grants"

# The seeded small site (tests/conftest.py SMALL_SITE): level 7 has published mbl_key products for 1, 3
# and 12 months (ids 3, 4, 5) and 7 days (17); level 8 has 30 days (10). Level 9 has no days product.
LEVEL = 7
PRODUCT_1_MONTH = 3
DAYS_LEVEL, DAYS_PRODUCT = 8, 10


def utc_today() -> date:
    return datetime.now(timezone.utc).date()


def new_email(tag: str = "learner") -> str:
    return f"{tag}.{uuid.uuid4().hex[:10]}@example.org"


def legacy_body(email: str | None = None, term_id=LEVEL, duration=1, units="months", **extra) -> dict:
    body: dict = {"email": email or new_email(), "key": {"term_id": term_id, "duration": duration, "units": units}}
    body.update(extra)
    return body


def brief_body(email: str | None = None, term_id=LEVEL, duration=1, units="months", **extra) -> dict:
    body: dict = {"user": {"email": email or new_email()},
                  "grant": {"term_id": term_id, "duration": duration, "units": units}}
    body.update(extra)
    return body


class Bridge:
    """The sidecar app wired to the emulated site, plus read access to both databases."""

    def __init__(self, runtime, emulator) -> None:
        self.runtime = runtime
        self.emulator_url, self.api_user, self.api_password, self.site_engine = emulator
        self.app = create_app(runtime, testing=True)
        self.client = self.app.test_client()

    def close(self) -> None:
        self.runtime.close()

    # --- requests ---------------------------------------------------------------------------------
    def signed(self, body, *, url: str = LEGACY_URL, form: bool = False, timestamp=None, secret: str = HMAC_SECRET,
               signature: str | None = None, headers: dict | None = None, **kwargs):
        """A legacy request: X-MLGB-Timestamp/X-MLGB-Signature over ``timestamp.rawbody``."""
        if isinstance(body, bytes):
            raw = body
        elif form:
            raw = urlencode(flatten_form(body)).encode()
        else:
            raw = json.dumps(body, ensure_ascii=False).encode()
        stamp = str(int(self.runtime.clock.now().timestamp())) if timestamp is None else str(timestamp)
        sent = {"X-MLGB-Timestamp": stamp,
                "X-MLGB-Signature": signature if signature is not None else legacy_signature(secret, stamp, raw)}
        sent.update(headers or {})
        content_type = "application/x-www-form-urlencoded" if form else "application/json"
        return self.client.post(url, data=raw, content_type=kwargs.pop("content_type", content_type), headers=sent,
                                **kwargs)

    def api(self, body, *, key: str | None = API_KEYS["crm"], url: str = API_URL, headers: dict | None = None,
            **kwargs):
        sent = {"X-API-Key": key} if key else {}
        sent.update(headers or {})
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        return self.client.post(url, data=raw, content_type=kwargs.pop("content_type", "application/json"),
                                headers=sent, **kwargs)

    def standard_webhook(self, body, *, secret: str = SW_SECRET, msg_id: str | None = None,
                         signature: str | None = None, url: str = API_URL):
        raw = json.dumps(body).encode()
        msg_id = msg_id or "msg_" + uuid.uuid4().hex
        moment = datetime.now(timezone.utc)
        sig = signature or Webhook(secret).sign(msg_id, moment, raw.decode())
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(moment.timestamp())), "webhook-signature": sig}
        return self.client.post(url, data=raw, content_type="application/json", headers=headers)

    def status(self, ref: str, *, key: str | None = API_KEYS["crm"]):
        return self.client.get(f"/api/v1/grants/{ref}", headers={"X-API-Key": key} if key else {})

    # --- the worker --------------------------------------------------------------------------------
    def deliverer(self, holder: str = "test-worker", **kwargs) -> GrantDeliverer:
        return GrantDeliverer(self.runtime, holder=holder, **kwargs)

    def deliver(self, holder: str = "test-worker"):
        return self.deliverer(holder).run_once()

    # --- the store -----------------------------------------------------------------------------------
    def grant(self, grant_id: str) -> Grant:
        with self.runtime.sessions() as session:
            grant = session.get(Grant, grant_id)
        assert grant is not None, f"no grant {grant_id}"
        return grant

    def grants(self) -> list[Grant]:
        with self.runtime.sessions() as session:
            return list(session.scalars(sa.select(Grant).order_by(Grant.created_at, Grant.id)))

    # --- the emulated site ---------------------------------------------------------------------------
    def set_faults(self, **faults) -> dict:
        response = requests.post(self.emulator_url + "/devstack/faults", json=faults,
                                 auth=(self.api_user, self.api_password), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def orders_handled(self) -> int:
        return requests.get(self.emulator_url + "/devstack/health", timeout=10).json()["orders_handled"]

    def site(self, statement: str, **params) -> list:
        with self.site_engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return result.all() if result.returns_rows else []

    def keys_of_grant(self, grant_id: str) -> list:
        """Key rows whose activation carried ``utm_id = grant_id``, with their keys_meta."""
        return self.site(
            'SELECT k.id, k.user_id, k.term_id, k."key" AS code, k.status, k.duration, k.units, k.date_start, '
            "k.date_end, k.date_registered, m.source, m.utm_source, m.utm_medium, m.utm_campaign, m.utm_id "
            "FROM wp_memberlux_term_keys k JOIN wp_memberlux_keys_meta m ON m.key_id = k.id "
            "WHERE m.utm_id = :grant_id ORDER BY k.id", grant_id=grant_id)

    def key_count(self) -> int:
        return self.site("SELECT COUNT(*) FROM wp_memberlux_term_keys")[0][0]

    def key_code(self, key_id: int) -> str:
        return self.site('SELECT "key" FROM wp_memberlux_term_keys WHERE id = :id', id=key_id)[0][0]

    def shop_orders(self) -> int:
        return self.site("SELECT COUNT(*) FROM wp_posts WHERE post_type = 'shop_order'")[0][0]


def flatten_form(data: dict, prefix: str = "") -> list[tuple[str, str]]:
    """{"key": {"term_id": 7}} -> [("key[term_id]", "7")], as a PHP form would post it."""
    pairs: list[tuple[str, str]] = []
    for name, value in data.items():
        full = f"{prefix}[{name}]" if prefix else str(name)
        if isinstance(value, dict):
            pairs.extend(flatten_form(value, full))
        else:
            pairs.append((full, str(value)))
    return pairs


def bridge_section(**extra) -> dict:
    return {"hmac_secret": HMAC_SECRET, "api_keys": dict(API_KEYS), "standard_webhook_secrets": {"sender": SW_SECRET},
            **extra}




# --- amoCRM ------------------------------------------------------------------------------------------------

AMO_TOKEN = "amo-test-token-6f1d2c9a8b7e4d3c2b1a0f9e8d7c6b5a"
PATH_TOKEN = strong_secret("amo-path-token")
HOOK = f"/hooks/amocrm/{PATH_TOKEN}"
PIPELINE, WON = 7000001, 142


def one_lead(lead_id: int = 101, contact_id: int = 201, email: str | None = None, **lead_fields):
    email = email or new_email("amo")
    lead_fields.setdefault("course", f"Английский с нуля ({LEVEL})")
    lead_fields.setdefault("duration", "1")
    lead_fields.setdefault("units", "месяц")
    leads = {lead_id: make_lead(lead_id, contact_ids=[contact_id], **lead_fields)}
    contacts = {contact_id: make_contact(contact_id, email=email, first_name="Ольга", last_name="Смирнова")}
    return leads, contacts, email


def post_event(bridge, lead_id: int, status_id: int = WON, pipeline_id: int = PIPELINE, *, path: str = HOOK, **kwargs):
    form = {"leads[status][0][id]": str(lead_id), "leads[status][0][status_id]": str(status_id),
            "leads[status][0][pipeline_id]": str(pipeline_id), "account[id]": "31000001"}
    return bridge.client.post(path, data=form, **kwargs)
