"""grants: idempotency keys belong to the credential that sent them

Revision ID: 0011_grant_keys_per_credential
Revises: 0010_admin_sessions
Create Date: 2026-12-06

Until now ``mls_grants.idempotency_key`` was one namespace for every credential: a second API key that
sent the same external_id or Idempotency-Key got the first key's grant back. Keys are now stored
inside the namespace of the credential that sent them (``<principal>|<key>``, the principal recorded
on the row), so this migration moves the existing keys there: a CRM that resends an old deal after
the upgrade still finds its grant (never twice). amoCRM lead keys of the amoCRM hook and of the legacy
HMAC relay stay shared, as before. A row with no principal keeps a key no credential can reach.
No schema change: the column and its unique index stay as they are. Mirrors ``sidecar.bridge.service.scoped_key``.
"""
import hashlib

from alembic import op
import sqlalchemy as sa


revision = '0011_grant_keys_per_credential'
down_revision = '0010_admin_sessions'
branch_labels = None
depends_on = None

_AMOCRM_PRINCIPALS = ('amocrm:path_token', 'hmac:legacy')
_SENDER_PREFIXES = ('hdr:', 'ext:', 'amocrm:lead:')
_MAX = 200


def _scoped(key: str, principal: str) -> str:
    if key.startswith('amocrm:lead:') and principal in _AMOCRM_PRINCIPALS:
        return key
    scoped = f'{principal}|{key}'
    if len(scoped) > _MAX:
        scoped = f"{principal}|sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
    return scoped


def _grants() -> sa.TableClause:
    return sa.table('mls_grants', sa.column('id', sa.String), sa.column('idempotency_key', sa.String),
                    sa.column('principal', sa.String))


def upgrade() -> None:
    bind = op.get_bind()
    grants = _grants()
    rows = bind.execute(sa.select(grants.c.id, grants.c.idempotency_key, grants.c.principal)
                        .where(sa.or_(*(grants.c.idempotency_key.like(prefix + '%') for prefix in _SENDER_PREFIXES))))
    for grant_id, key, principal in list(rows):
        new = _scoped(key, principal or '')
        if new != key:
            bind.execute(grants.update().where(grants.c.id == grant_id).values(idempotency_key=new))


def downgrade() -> None:
    # Keys that were hashed for length cannot be restored; those rows keep their scoped key.
    bind = op.get_bind()
    grants = _grants()
    rows = bind.execute(sa.select(grants.c.id, grants.c.idempotency_key, grants.c.principal)
                        .where(grants.c.idempotency_key.like('%|%')))
    for grant_id, key, principal in list(rows):
        prefix = f'{principal or ""}|'
        rest = key[len(prefix):] if key.startswith(prefix) else None
        if rest and rest.startswith(_SENDER_PREFIXES):
            taken = bind.execute(sa.select(grants.c.id).where(grants.c.idempotency_key == rest)).first()
            if taken is None:
                bind.execute(grants.update().where(grants.c.id == grant_id).values(idempotency_key=rest))
