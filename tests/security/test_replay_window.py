"""Finding 10: Standard Webhooks messages were accepted within the library's fixed five minutes even with
``bridge.replay_window_seconds = 30``, and once the replay record was purged (after twice the window)
the same message was accepted again.

The configured window is now enforced on ``webhook-timestamp`` with the clock the bridge uses (the
``now`` every check receives), and a seen record outlives every moment its timestamp can be accepted.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from sidecar.bridge.auth import AuthError, authenticate, legacy_signature, purge_seen_signatures
from sidecar.config import BridgeSettings
from sidecar.store import db as store_db
from tests.stores import migrate_store
from tests.strong_secrets import strong_secret

SW_SECRET = "whsec_" + base64.b64encode(b"replay-window-test-secret-0123456789").decode()
HMAC_SECRET = strong_secret("replay-window-hmac")
WINDOW = 30
BODY = json.dumps({"email": "replay@example.org", "key": {"term_id": 7, "duration": 1, "units": "months"}}).encode()


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    migrate_store(url)
    engine = store_db.create_store_engine(url)
    yield store_db.session_factory(engine)
    engine.dispose()


def settings(window: int = WINDOW) -> BridgeSettings:
    return BridgeSettings.model_validate({"standard_webhook_secrets": {"sender": SW_SECRET},
                                          "hmac_secret": HMAC_SECRET, "replay_window_seconds": window})


def signed(stamp: datetime, msg_id: str = "msg_replay_1") -> dict[str, str]:
    # The library checks the timestamp against its own clock (the real one, with five minutes' tolerance),
    # so the messages are stamped with real time and the sidecar's clock is what each call passes as ``now``.
    seconds = int(stamp.timestamp())
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return {"webhook-id": msg_id, "webhook-timestamp": str(seconds),
            "webhook-signature": Webhook(SW_SECRET).sign(msg_id, moment, BODY)}


def test_a_message_older_than_the_configured_window_is_refused(sessions):
    sent_at = datetime.now(timezone.utc) - timedelta(seconds=WINDOW + 30)   # inside the library's 5 minutes
    with pytest.raises(AuthError) as caught:
        authenticate(signed(sent_at), BODY, settings(), sessions, datetime.now(timezone.utc))
    assert caught.value.status == 401 and caught.value.code == "timestamp_expired"
    assert f"{WINDOW} s" in caught.value.message


def test_a_message_is_not_accepted_again_after_its_record_is_purged(sessions):
    sent_at = datetime.now(timezone.utc).replace(microsecond=0)
    headers = signed(sent_at)
    assert authenticate(headers, BODY, settings(), sessions, sent_at).kind == "standard_webhooks"
    later = sent_at + timedelta(seconds=2 * WINDOW + 5)      # the old purge horizon has passed
    purge_seen_signatures(sessions, later)
    with pytest.raises(AuthError) as caught:
        authenticate(headers, BODY, settings(), sessions, later)
    assert caught.value.code == "timestamp_expired"


@pytest.mark.parametrize("kind", ["standard_webhooks", "hmac"])
def test_the_record_outlives_every_moment_the_timestamp_is_still_accepted(sessions, kind):
    from sidecar.bridge.auth import seen_record_lifetime

    # Worst case: first seen as early as the window allows (stamped WINDOW s ahead of our clock), replayed
    # as late as it allows (WINDOW s after the stamp), with a purge run just before the replay.
    sent_at = datetime.now(timezone.utc).replace(microsecond=0)
    if kind == "hmac":
        stamp = str(int(sent_at.timestamp()))
        headers = {"X-MLGB-Timestamp": stamp, "X-MLGB-Signature": legacy_signature(HMAC_SECRET, stamp, BODY)}
    else:
        headers = signed(sent_at, "msg_edge")
    first_seen, replay_at = sent_at - timedelta(seconds=WINDOW), sent_at + timedelta(seconds=WINDOW)
    authenticate(headers, BODY, settings(), sessions, first_seen)
    assert first_seen + seen_record_lifetime(WINDOW) > replay_at
    assert purge_seen_signatures(sessions, replay_at) == 0
    with pytest.raises(AuthError) as caught:
        authenticate(headers, BODY, settings(), sessions, replay_at)
    assert caught.value.status == 409 and caught.value.code == "replayed_request"
    # A second later the timestamp itself is refused, so the record may go.
    assert purge_seen_signatures(sessions, first_seen + seen_record_lifetime(WINDOW) + timedelta(seconds=1)) == 1
    with pytest.raises(AuthError) as caught:
        authenticate(headers, BODY, settings(), sessions, replay_at + timedelta(seconds=1))
    assert caught.value.code == "timestamp_expired"


def test_raising_the_window_does_not_reopen_a_purged_replay(sessions):
    """Records written under a 30 s window are kept as long as the window configured now requires."""
    sent_at = datetime.now(timezone.utc).replace(microsecond=0)
    headers = signed(sent_at, "msg_raised")
    authenticate(headers, BODY, settings(WINDOW), sessions, sent_at)
    later = sent_at + timedelta(seconds=3 * WINDOW)           # past the 30 s record's own expiry
    assert purge_seen_signatures(sessions, later, window=120) == 0
    with pytest.raises(AuthError) as caught:
        authenticate(headers, BODY, settings(120), sessions, later)
    assert caught.value.code == "replayed_request"
