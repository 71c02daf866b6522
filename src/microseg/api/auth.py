"""Who is calling: API key verification (in memory) and a per-key token-bucket rate limit.

Keys are read from the store once at startup; keys created or revoked through the admin API
update the in-memory table. (DuckDB allows one writing process, so while the server runs it
is the only place keys can change.)
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from dataclasses import dataclass

from microseg.api.keys import ApiKey, active_keys, hash_secret, parse_key
from microseg.api.problems import ApiProblem
from microseg.api.settings import MIN_BOOTSTRAP_KEY_LENGTH, WEAK_KEYS, ApiSettings
from microseg.errors import ConfigError
from microseg.privacy.crypto import KeyRing
from microseg.store import Store

log = logging.getLogger("microseg.api.auth")
BOOTSTRAP_ID = "bootstrap"
DEV_KEY = "dev"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="microseg"'}


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    key_id: str
    role: str
    name: str | None = None
    rate_per_second: float | None = None


def check_bootstrap_key(settings: ApiSettings) -> str | None:
    """The bootstrap admin key, refusing blank/default/short keys outside dev mode."""
    value = settings.admin_key.get_secret_value() if settings.admin_key else None
    if value is None:
        return DEV_KEY if settings.dev else None
    if not settings.dev and (
        value.strip().lower() in WEAK_KEYS or len(value.strip()) < MIN_BOOTSTRAP_KEY_LENGTH
    ):
        raise ConfigError(
            "MICROSEG_API_ADMIN_KEY is blank, a default value or shorter than "
            f"{MIN_BOOTSTRAP_KEY_LENGTH} characters; use `microseg apikey create --role admin` "
            "or a long random value (weak keys are only allowed with dev mode)"
        )
    return value


class Authenticator:
    """Verifies presented keys against the hashed keys of the store."""

    def __init__(self, ring: KeyRing, keys: dict[str, ApiKey], bootstrap: str | None) -> None:
        self._ring = ring
        self._keys = dict(keys)
        self._bootstrap = bootstrap

    @classmethod
    def from_store(cls, store: Store, ring: KeyRing, settings: ApiSettings) -> Authenticator:
        bootstrap = check_bootstrap_key(settings)
        keys = active_keys(store)
        if not keys and bootstrap is None:
            raise ConfigError(
                "no API keys: create one with `microseg apikey create --role admin` "
                "(or set MICROSEG_API_ADMIN_KEY, or use dev mode)"
            )
        if settings.dev and bootstrap == DEV_KEY:
            log.warning(
                "dev mode: the admin key 'dev' is accepted; never use dev mode in production"
            )
        return cls(ring, keys, bootstrap)

    def authenticate(self, presented: str | None) -> Principal:
        if not presented:
            raise ApiProblem(
                401,
                "unauthorized",
                "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers=CHALLENGE,
            )
        if self._bootstrap is not None and hmac.compare_digest(
            presented.encode(), self._bootstrap.encode()
        ):
            return Principal(BOOTSTRAP_ID, "admin", "bootstrap")
        parsed = parse_key(presented)
        record = self._keys.get(parsed[0]) if parsed else None
        if (
            parsed is None
            or record is None
            or not hmac.compare_digest(hash_secret(self._ring, parsed[1]), record.key_hash)
        ):
            raise ApiProblem(401, "unauthorized", "invalid or revoked API key", headers=CHALLENGE)
        return Principal(record.key_id, record.role, record.name, record.rate_per_second)

    def add(self, record: ApiKey) -> None:
        self._keys[record.key_id] = record

    def remove(self, key_id: str) -> None:
        self._keys.pop(key_id, None)


class RateLimiter:
    """Token bucket per key: ``rate`` tokens per second up to ``burst``; one token per request."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, principal: Principal) -> None:
        rate = principal.rate_per_second or self.rate
        burst = max(self.burst * rate / self.rate, 1.0)
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(principal.key_id)
            if bucket is None:
                bucket = self._buckets[principal.key_id] = [burst, now]
            tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if tokens < 1.0:
                bucket[0] = tokens
                wait = math.ceil((1.0 - tokens) / rate)
                raise ApiProblem(
                    429,
                    "rate-limited",
                    f"rate limit of {rate:g} requests/s exceeded for key {principal.key_id}",
                    headers={"Retry-After": str(wait)},
                )
            bucket[0] = tokens - 1.0
