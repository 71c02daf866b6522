"""API keys with roles: creation, hashing (HMAC-SHA256 with the project key), listing, revocation.

A key reads ``msk_<key_id>_<secret>``. Only ``HMAC(project hmac key, secret)`` is stored, so a
copy of the database alone cannot be used to check guesses. Plain library code: no FastAPI.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from microseg.api.schema import ensure_schema
from microseg.errors import ConfigError, NotFoundError
from microseg.privacy.crypto import KeyRing
from microseg.store import Store, utcnow

Role = Literal["admin", "analyst", "collector", "decision-reader"]
ROLES: tuple[str, ...] = ("admin", "analyst", "collector", "decision-reader")
KEY_RE = re.compile(r"^msk_([a-z0-9]{10})_([A-Za-z0-9_-]{32,64})$")


@dataclass(frozen=True)
class ApiKey:
    """A stored key (never the secret itself)."""

    key_id: str
    role: str
    key_hash: str
    name: str | None = None
    rate_per_second: float | None = None


def hash_secret(ring: KeyRing, secret: str) -> str:
    """HMAC-SHA256 of the key's secret part with the project's HMAC key."""
    return hmac.new(ring.hmac_key, b"apikey:" + secret.encode(), hashlib.sha256).hexdigest()


def parse_key(presented: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    match = KEY_RE.match(presented.strip())
    return (match.group(1), match.group(2)) if match else None


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ConfigError(f"unknown role '{role}'; roles: {', '.join(ROLES)}")
    return role


def create_key(
    store: Store,
    ring: KeyRing,
    role: str,
    *,
    name: str | None = None,
    rate_per_second: float | None = None,
    actor: str = "library",
) -> tuple[ApiKey, str]:
    """Create a key; returns the stored record and the full key (shown once, never stored)."""
    check_role(role)
    if rate_per_second is not None and rate_per_second <= 0:
        raise ConfigError(f"rate must be > 0 requests per second, got {rate_per_second}")
    ensure_schema(store)
    key_id = secrets.token_hex(5)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id, role, hash_secret(ring, secret), name, rate_per_second)
    with store.transaction():
        store.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
            [key_id, name, role, record.key_hash, rate_per_second, utcnow(), actor],
        )
        store.audit(actor, "apikey_create", key_id, {"role": role, "name": name})
    return record, f"msk_{key_id}_{secret}"


def active_keys(store: Store) -> dict[str, ApiKey]:
    """Every key that is not revoked, by key id."""
    ensure_schema(store)
    rows = store.rows(
        "SELECT key_id, role, key_hash, name, rate_per_second FROM api_keys WHERE revoked_at IS NULL"
    )
    return {r[0]: ApiKey(r[0], r[1], r[2], r[3], r[4]) for r in rows}


def list_keys(store: Store) -> pd.DataFrame:
    ensure_schema(store)
    return store.df(
        "SELECT key_id, name, role, rate_per_second, created_at, created_by, revoked_at"
        " FROM api_keys ORDER BY created_at"
    )


def revoke_key(store: Store, key_id: str, *, actor: str = "library") -> None:
    ensure_schema(store)
    with store.transaction():
        found = store.scalar(
            "SELECT count(*) FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", [key_id]
        )
        if not found:
            raise NotFoundError(f"no active API key '{key_id}'")
        store.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?", [utcnow(), key_id])
        store.audit(actor, "apikey_revoke", key_id)
