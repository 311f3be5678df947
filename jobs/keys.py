"""API keys for operators: create (the key is returned once), list, revoke, and look up by hash.

A key is ``gf_`` + 32 random bytes in base64url. Only its sha256 is stored: a leaked database
does not hand out working keys, and a plain hash suffices because the key has 256 bits of
entropy (no dictionary to attack, so no slow KDF is needed — which keeps every request cheap).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from ganforge.jobs.db import Database
from ganforge.jobs.models import ApiKey, utcnow

KEY_PREFIX = "gf_"
TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class KeyAdminError(ValueError):
    """A bad tenant name or an unknown key id (the message says which)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant, whether they may see every tenant, and the key used."""

    tenant: str
    is_admin: bool
    key_id: str | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def check_tenant(tenant: str) -> str:
    if not TENANT.fullmatch(tenant):
        raise KeyAdminError(f"tenant {tenant!r} must be 1-64 of a-z 0-9 _ - (starting with a letter or digit)")
    return tenant


def create_key(db: Database, tenant: str, is_admin: bool = False) -> tuple[ApiKey, str]:
    """(row, key). The key is not stored anywhere: show it to the operator now or never."""
    check_tenant(tenant)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        row = ApiKey(tenant=tenant, key_hash=hash_key(key), prefix=key[:10], is_admin=is_admin)
        session.add(row)
        session.flush()
    return row, key


def list_keys(db: Database) -> list[ApiKey]:
    with db.session() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at)))


def revoke_key(db: Database, key_id: str) -> ApiKey:
    with db.session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise KeyAdminError(f"no API key with id {key_id!r} (see `ganforge keys list`)")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return row


def principal_for(db: Database, key: str) -> Principal | None:
    """The principal of a live key, or None (unknown, malformed or revoked)."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    with db.read() as session:
        row = session.execute(
            select(ApiKey.id, ApiKey.tenant, ApiKey.is_admin)
            .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
        ).one_or_none()
    return None if row is None else Principal(row.tenant, bool(row.is_admin), row.id)
