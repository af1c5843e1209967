"""Finding 8: grants and idempotency keys were not scoped per credential. API key ``shop`` read the grant
that key ``crm`` created (e-mail, user id, key id) by its external_id, and the same external_id or
Idempotency-Key from ``shop`` returned ``crm``'s grant.

A grant now belongs to the credential that created it (``mls_grants.principal``): another one gets 404,
and its keys live in a namespace of their own. One CRM still never gets two grants for one deal.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from sidecar.bridge.auth import legacy_signature
from sidecar.store import db as store_db
from sidecar.store.grant_models import Grant
from tests.bridge.support import API_KEYS, HMAC_SECRET, Bridge, brief_body, legacy_body

CRM, SHOP = API_KEYS["crm"], API_KEYS["shop"]
BEFORE = "0010_admin_sessions"


@pytest.fixture
def bridge(store_section, make_bridge) -> Bridge:
    return make_bridge(store=store_section)


def test_another_key_cannot_read_a_grant_by_external_id_or_id(bridge):
    created = bridge.api(brief_body(email="owner@example.org", external_id="deal-1001"), key=CRM)
    assert created.status_code == 202, created.json
    grant_id = created.json["grant_id"]
    for ref in ("deal-1001", grant_id):
        stranger = bridge.status(ref, key=SHOP)
        assert stranger.status_code == 404, stranger.json
        assert stranger.json["code"] == "not_found" and "owner@example.org" not in stranger.get_data(as_text=True)
        owner = bridge.status(ref, key=CRM)
        assert owner.status_code == 200 and owner.json["grant_id"] == grant_id


@pytest.mark.parametrize("how", ["external_id", "idempotency_key"])
@pytest.mark.parametrize("same_payload", [True, False], ids=["same_payload", "other_payload"])
def test_the_same_key_from_another_credential_never_returns_the_other_grant(bridge, how, same_payload):
    def send(key: str, email: str):
        if how == "external_id":
            return bridge.api(brief_body(email=email, external_id="deal-2002"), key=key)
        return bridge.api(brief_body(email=email), key=key, headers={"Idempotency-Key": "order-2002"})

    first = send(CRM, "first@example.org")
    assert first.status_code == 202, first.json
    # Before: the same payload replayed the other key's grant, another one got 409 naming it.
    email = "first@example.org" if same_payload else "second@example.org"
    other = send(SHOP, email)
    assert other.status_code == 202, other.json
    assert "Idempotent-Replayed" not in other.headers
    assert other.json["grant_id"] != first.json["grant_id"] and other.json["email"] == email
    assert first.json["grant_id"] not in other.get_data(as_text=True)
    # Each credential still gets its own grant back: never twice for one deal of one CRM.
    for key, grant in ((CRM, first), (SHOP, other)):
        again = send(key, email if key == SHOP else "first@example.org")
        assert again.status_code == 202 and again.json["grant_id"] == grant.json["grant_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
    conflict = send(SHOP, "third@example.org")
    assert conflict.status_code == 409 and conflict.json["grant_id"] == other.json["grant_id"]


def test_the_legacy_hmac_sender_is_one_principal_with_its_own_grants(bridge):
    now = int(bridge.runtime.clock.now().timestamp())
    signed = bridge.signed(legacy_body(email="legacy@example.org", external_id="deal-3003"), timestamp=now)
    assert signed.status_code == 202, signed.json
    assert bridge.grant(signed.json["grant_id"]).principal == "hmac:legacy"
    assert bridge.status("deal-3003", key=CRM).status_code == 404
    stamp = str(now - 1)    # a new signature: the first one is accepted once
    read = bridge.client.get("/api/v1/grants/deal-3003", headers={
        "X-MLGB-Timestamp": stamp, "X-MLGB-Signature": legacy_signature(HMAC_SECRET, stamp, b"")})
    assert read.status_code == 200 and read.json["grant_id"] == signed.json["grant_id"]
    again = bridge.signed(legacy_body(email="legacy@example.org", external_id="deal-3003"), timestamp=now - 2)
    assert again.status_code == 202 and again.json["grant_id"] == signed.json["grant_id"]


def test_grants_made_before_the_upgrade_stay_with_their_credential(bridge):
    """The 0011 migration moves the keys of existing grants into their credential's namespace."""
    from sidecar.bridge.service import scoped_key

    old = bridge.api(brief_body(email="old@example.org", external_id="deal-4004"), key=CRM).json["grant_id"]
    orphan = bridge.api(brief_body(email="orphan@example.org", external_id="deal-4005"), key=CRM).json["grant_id"]
    engine = bridge.runtime.store_engine
    store_db.downgrade(engine, BEFORE)
    grants = sa.table("mls_grants", sa.column("id"), sa.column("idempotency_key"), sa.column("principal"))
    with engine.begin() as conn:
        assert conn.execute(sa.select(grants.c.idempotency_key).where(grants.c.id == old)).scalar() == "ext:deal-4004"
        # A row whose credential is unknown: after the upgrade no credential can reach it (an admin still can).
        conn.execute(grants.update().where(grants.c.id == orphan).values(principal=""))
    store_db.upgrade(engine)
    assert bridge.grant(old).idempotency_key == scoped_key("ext:deal-4004", "api_key:crm") == "api_key:crm|ext:deal-4004"
    resent = bridge.api(brief_body(email="old@example.org", external_id="deal-4004"), key=CRM)
    assert resent.json["grant_id"] == old and resent.headers["Idempotent-Replayed"] == "true"
    assert bridge.api(brief_body(email="x@example.org", external_id="deal-4004"), key=SHOP).json["grant_id"] != old
    assert bridge.status("deal-4005", key=CRM).status_code == 404
    with bridge.runtime.sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Grant).where(Grant.email == "old@example.org")) == 1


def test_a_key_too_long_for_the_column_is_scoped_by_digest():
    from sidecar.bridge.service import scoped_key

    long_key = "ext:" + "x" * 190
    scoped = scoped_key(long_key, "standard_webhooks:" + "n" * 64)
    assert len(scoped) <= 200 and scoped.startswith("standard_webhooks:" + "n" * 64 + "|sha256:")
    assert scoped_key("amocrm:lead:42", "hmac:legacy") == scoped_key("amocrm:lead:42", "amocrm:path_token")
    assert scoped_key("amocrm:lead:42", "api_key:crm") == "api_key:crm|amocrm:lead:42"
