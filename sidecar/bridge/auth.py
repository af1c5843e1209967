"""Who may post grants: legacy HMAC signatures, named API keys, Standard Webhooks signatures.

The legacy scheme is kept bit-for-bit (legacy-plugins.md §1.3): lowercase hex HMAC-SHA256 over
``timestamp + "." + raw body``, headers checked in the order headers → signature → clock, with the
same error names. What the legacy plugin lacked is added: a signature is accepted once (replay
protection inside the window), and nothing unsigned (query parameters) is ever read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sidecar.config import BridgeSettings, Credential, scopes_of
from sidecar.store.grant_models import SeenSignature

LEGACY_TIMESTAMP = "X-MLGB-Timestamp"
LEGACY_SIGNATURE = "X-MLGB-Signature"
API_KEY = "X-API-Key"
SW_ID, SW_TIMESTAMP, SW_SIGNATURE = "webhook-id", "webhook-timestamp", "webhook-signature"


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str, *, legacy_error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.legacy_error = legacy_error or code


@dataclass(frozen=True)
class Principal:
    """Who sent a request. ``str(principal)`` is recorded on every grant it creates and owns it."""

    kind: str   # hmac | api_key | standard_webhooks | amocrm
    name: str
    # Signed senders (legacy HMAC, Standard Webhooks) can only create grants; an API key has its configured scopes.
    scopes: frozenset[str] = field(default=frozenset({"grant"}), compare=False)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise AuthError(403, "insufficient_scope",
                        f"the credential {principal} lacks the '{scope}' scope "
                        f"(it has: {', '.join(sorted(principal.scopes)) or 'none'})")


def legacy_signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + b"." + body, hashlib.sha256).hexdigest()


def seen_record_lifetime(window: int) -> timedelta:
    """How long an accepted signature is remembered.

    A message stamped ``t`` is accepted while ``|now - t| <= window``; one first seen at ``s`` has
    ``t <= s + window``, so a replay can arrive up to ``s + 2 * window``. The purge removes records whose
    expiry is strictly past, so a record kept a second beyond that still exists at every moment its
    timestamp could be accepted again.
    """
    return timedelta(seconds=2 * window + 1)


def _remember_once(sessions: sessionmaker[Session], material: str, now: datetime, window: int) -> bool:
    """True the first time ``material`` is seen within the window (a unique insert decides)."""
    digest = hashlib.sha256(material.encode("utf-8")).hexdigest()
    with sessions() as session:
        session.add(SeenSignature(digest=digest, seen_at=now, expires_at=now + seen_record_lifetime(window)))
        try:
            session.commit()
            return True
        except IntegrityError:
            session.rollback()
            return False


def _legacy(headers: Mapping[str, str], body: bytes, settings: BridgeSettings, sessions, now: datetime) -> Principal:
    timestamp, signature = headers.get(LEGACY_TIMESTAMP), headers.get(LEGACY_SIGNATURE)
    if not timestamp or not signature:
        raise AuthError(401, "hmac_headers_missing", f"both {LEGACY_TIMESTAMP} and {LEGACY_SIGNATURE} are required")
    if settings.hmac_secret is None:
        raise AuthError(401, "hmac_not_configured", "signed requests are not enabled on this sidecar (bridge.hmac_secret)")
    expected = legacy_signature(settings.hmac_secret.reveal(), timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise AuthError(403, "invalid_hmac", "the signature does not match the body")
    try:
        sent_at = int(timestamp.strip())
    except ValueError:
        sent_at = 0  # as PHP's (int) cast: a non-numeric timestamp fails the window
    window = settings.replay_window_seconds
    if abs(now.timestamp() - sent_at) > window:
        raise AuthError(401, "timestamp_expired", f"the timestamp is more than {window} s away from the server clock")
    if not _remember_once(sessions, f"mlgb:{timestamp}:{signature}", now, window):
        raise AuthError(409, "replayed_request", "this signed request was already received")
    return Principal("hmac", "legacy")


def _api_key(presented: str, settings: BridgeSettings) -> Principal:
    matched = None
    # Compare against every key so the time taken does not depend on which one matched.
    for name, secret in settings.api_keys.items():
        # Both values of a key being rotated belong to the same name, which owns the grants.
        for value in secret.values() if isinstance(secret, Credential) else [secret.reveal()]:
            if hmac.compare_digest(value.encode(), presented.encode("utf-8", "replace")):
                matched = name
    if matched is None:
        raise AuthError(403, "invalid_api_key", "the API key is not valid")
    return Principal("api_key", matched, scopes_of(settings.api_keys[matched]))


def _standard_webhooks(headers: Mapping[str, str], body: bytes, settings: BridgeSettings, sessions,
                       now: datetime) -> Principal:
    if not settings.standard_webhook_secrets:
        raise AuthError(401, "signature_not_configured", "Standard Webhooks signatures are not enabled on this sidecar")
    wanted = {SW_ID: headers.get(SW_ID, ""), SW_TIMESTAMP: headers.get(SW_TIMESTAMP, ""),
              SW_SIGNATURE: headers.get(SW_SIGNATURE, "")}
    if not all(wanted.values()):
        raise AuthError(401, "signature_headers_missing", "webhook-id, webhook-timestamp and webhook-signature are required")
    matched = None
    for name, secret in settings.standard_webhook_secrets.items():
        try:
            Webhook(secret.reveal()).verify(body, wanted, json_parse=False)
            matched = name
            break
        except WebhookVerificationError as exc:
            if "timestamp" in str(exc).lower():
                raise AuthError(401, "timestamp_expired", "webhook-timestamp is outside the tolerance") from None
        except ValueError:
            # The library unpacks and base64-decodes the header (and decodes the body as UTF-8)
            # without catching: a malformed header or body is simply not a valid signature.
            continue
    if matched is None:
        raise AuthError(403, "invalid_signature", "no configured secret verifies webhook-signature")
    # The library allows a fixed five minutes (on its own clock); the configured window is ours, on the
    # clock everything else uses, and the replay record's lifetime is derived from it.
    window = settings.replay_window_seconds
    try:
        sent_at = int(wanted[SW_TIMESTAMP].strip())
    except ValueError:
        sent_at = 0
    if abs(now.timestamp() - sent_at) > window:
        raise AuthError(401, "timestamp_expired", f"webhook-timestamp is more than {window} s away from the server clock")
    if not _remember_once(sessions, f"sw:{matched}:{wanted[SW_ID]}", now, window):
        raise AuthError(409, "replayed_request", "this webhook-id was already received")
    return Principal("standard_webhooks", matched)


def authenticate(headers: Mapping[str, str], body: bytes, settings: BridgeSettings, sessions: sessionmaker[Session],
                 now: datetime) -> Principal:
    """The credential the request carries, verified; ``AuthError`` otherwise."""
    if headers.get(LEGACY_TIMESTAMP) or headers.get(LEGACY_SIGNATURE):
        return _legacy(headers, body, settings, sessions, now)
    if headers.get(API_KEY):
        return _api_key(headers[API_KEY], settings)
    if headers.get(SW_SIGNATURE) or headers.get(SW_ID):
        return _standard_webhooks(headers, body, settings, sessions, now)
    raise AuthError(401, "authentication_required",
                    f"send {LEGACY_TIMESTAMP}/{LEGACY_SIGNATURE}, {API_KEY}, or Standard Webhooks headers",
                    legacy_error="hmac_headers_missing")


def purge_seen_signatures(sessions: sessionmaker[Session], now: datetime, window: int | None = None) -> int:
    """Forget signatures whose timestamps can no longer be accepted.

    With ``window`` (the current ``bridge.replay_window_seconds``) a record also stays while it is younger
    than that window's lifetime: a window raised since the record was written must not reopen a replay.
    """
    import sqlalchemy as sa

    expired = [SeenSignature.expires_at < now]
    if window is not None:
        expired.append(SeenSignature.seen_at < now - seen_record_lifetime(window))
    with sessions() as session:
        removed = session.execute(sa.delete(SeenSignature).where(*expired)).rowcount
        session.commit()
        return removed or 0
