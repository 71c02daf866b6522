"""The sends ledger: a durable outbox row before every attempt, idempotent by key.

Lifecycle of a row in ``sends`` (one per idempotency key)::

    pending --claim--> sending --ok--> sent
       ^                  |--transient error--> pending (attempts+1, last_error, next_attempt_at)
       |                  |--permanent error / max attempts--> failed
    (deferred by quiet hours: pending with a future next_attempt_at)
    skipped: refused before any attempt (no consent, frequency cap)

:meth:`SendLedger.send_once` writes/claims the row *before* calling the channel, so a
crash never loses a send (the row stays ``pending``/``sending`` and is picked up again by
:meth:`SendLedger.due` once its lease expires), and a key that reached ``sent`` is never
sent again. The one unavoidable window — the process dies after the provider accepted the
message but before ``sent`` is written — is covered by passing the key to the provider
(``Idempotency-Key`` header for webhooks, a key-derived ``Message-ID`` for email).
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd

from microseg.privacy.crypto import KeyRing
from microseg.store import Store
from microseg.store.duckdb_store import utcnow

Status = Literal["sent", "retry", "failed", "skipped", "deferred", "duplicate", "in_flight"]
FINAL_STATUSES = frozenset({"sent", "failed", "skipped"})


@dataclass(frozen=True)
class SendResult:
    """Outcome of one send (from a channel, or from the ledger for a known key).

    ``retry`` means a transient failure (the row stays pending); ``failed`` is permanent.
    """

    status: Status
    provider_id: str | None = None
    error: str | None = None
    attempts: int = 1
    key: str | None = None

    @property
    def ok(self) -> bool:
        """True once the message is (or was already) delivered."""
        return self.status in {"sent", "duplicate"}


@dataclass(frozen=True)
class SendMeta:
    """What the ledger records about a send besides its status."""

    channel: str
    profile_id: str | None = None
    purpose: str | None = None
    block: str | None = None
    block_version: int | None = None
    recipient: str | None = None
    payload: dict[str, Any] | None = None


class SendLedger:
    """Durable, idempotent record of every send in the ``sends`` table."""

    def __init__(
        self,
        store: Store,
        *,
        keys: KeyRing | None = None,
        max_attempts: int = 6,
        lease: timedelta = timedelta(minutes=5),
        retry_base: timedelta = timedelta(seconds=30),
        retry_cap: timedelta = timedelta(hours=6),
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.max_attempts = max_attempts
        self.lease = lease
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.clock = clock
        self.rng = rng or random.Random()

    # -- payload privacy -----------------------------------------------------------------
    def _encode(self, key: str, payload: dict[str, Any] | None) -> str | None:
        if payload is None:
            return None
        text = json.dumps(payload, default=str)
        if self.keys is None:
            return text
        blob = self.keys.encrypt(text, context=f"send|{key}")
        return json.dumps({"enc": base64.b64encode(blob).decode()})

    def payload(self, key: str) -> dict[str, Any] | None:
        """The stored message payload of a send (decrypted when the ledger has keys)."""
        raw = self.store.scalar("SELECT payload FROM sends WHERE send_key = ?", [key])
        if raw is None:
            return None
        data = json.loads(raw)
        if isinstance(data, dict) and set(data) == {"enc"}:
            if self.keys is None:
                raise ValueError(f"send {key} payload is encrypted and the ledger has no keys")
            data = json.loads(
                self.keys.decrypt(base64.b64decode(data["enc"]), context=f"send|{key}")
            )
        return data

    def _token(self, recipient: str | None) -> str | None:
        if recipient is None:
            return None
        return self.keys.token(recipient, "recipient") if self.keys else None

    # -- writing -------------------------------------------------------------------------
    def record(
        self,
        key: str,
        meta: SendMeta,
        *,
        status: str = "pending",
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Insert the row for ``key`` if it does not exist yet; returns True if inserted."""
        now = self.clock()
        with self.store.transaction():
            if self.store.scalar("SELECT count(*) FROM sends WHERE send_key = ?", [key]):
                return False
            self.store.execute(
                "INSERT INTO sends (send_key, profile_id, channel, purpose, block, block_version,"
                " recipient_token, status, attempts, last_error, payload, created_at, updated_at,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
                [
                    key,
                    meta.profile_id,
                    meta.channel,
                    meta.purpose,
                    meta.block,
                    meta.block_version,
                    self._token(meta.recipient),
                    status,
                    error,
                    self._encode(key, meta.payload),
                    now,
                    now,
                    next_attempt_at,
                ],
            )
        return True

    def defer(self, key: str, until: datetime, reason: str) -> None:
        """Keep a pending row waiting until ``until`` (e.g. quiet hours)."""
        self.store.execute(
            "UPDATE sends SET next_attempt_at = ?, last_error = ?, updated_at = ?"
            " WHERE send_key = ? AND status = 'pending'",
            [until, reason, self.clock(), key],
        )

    def skip(self, key: str, reason: str) -> bool:
        """Refuse a pending send before any attempt (no consent, frequency cap)."""
        with self.store.transaction():
            if self.status(key) != "pending":
                return False
            self.store.execute(
                "UPDATE sends SET status = 'skipped', last_error = ?, updated_at = ? WHERE send_key = ?",
                [reason, self.clock(), key],
            )
        return True

    def status(self, key: str) -> str | None:
        found = self.store.scalar("SELECT status FROM sends WHERE send_key = ?", [key])
        return None if found is None else str(found)

    def _claim(self, key: str) -> tuple[str, int, str | None, str | None]:
        """Atomically move a claimable row to ``sending``; yields (status, attempts, provider, error)."""
        now = self.clock()
        with self.store.transaction():
            row = self.store.rows(
                "SELECT status, attempts, provider_id, last_error, lease_until FROM sends WHERE send_key = ?",
                [key],
            )
            status, attempts, provider, error, lease_until = row[0]
            claimable = status == "pending" or (
                status == "sending" and (lease_until is None or lease_until <= now)
            )
            if claimable:
                attempts += 1
                self.store.execute(
                    "UPDATE sends SET status = 'sending', attempts = ?, lease_until = ?, updated_at = ?"
                    " WHERE send_key = ?",
                    [attempts, now + self.lease, now, key],
                )
                status = "claimed"
        return status, int(attempts), provider, error

    def send_once(
        self,
        key: str,
        fn: Callable[[], SendResult],
        meta: SendMeta | None = None,
    ) -> SendResult:
        """Run ``fn`` at most once successfully for ``key``; record every attempt durably."""
        self.record(key, meta or SendMeta(channel="unknown"))
        status, attempts, provider, error = self._claim(key)
        if status == "sent":
            return SendResult("duplicate", provider, None, attempts, key)
        if status in {"failed", "skipped"}:
            return SendResult(status, provider, error, attempts, key)  # type: ignore[arg-type]
        if status == "sending":
            return SendResult("in_flight", None, "another attempt holds the lease", attempts, key)
        try:
            result = fn()
        except BaseException as exc:
            self._finish(key, attempts, SendResult("retry", None, f"{type(exc).__name__}: {exc}"))
            raise
        return self._finish(key, attempts, result)

    def _finish(self, key: str, attempts: int, result: SendResult) -> SendResult:
        now = self.clock()
        error = (result.error or "")[:1000] or None
        if result.status == "sent":
            self.store.execute(
                "UPDATE sends SET status = 'sent', provider_id = ?, last_error = NULL, sent_at = ?,"
                " updated_at = ?, lease_until = NULL, next_attempt_at = NULL WHERE send_key = ?",
                [result.provider_id, now, now, key],
            )
            return replace(result, attempts=attempts, key=key)
        if result.status == "retry" and attempts < self.max_attempts:
            delay = self.backoff(attempts)
            self.store.execute(
                "UPDATE sends SET status = 'pending', last_error = ?, next_attempt_at = ?,"
                " updated_at = ?, lease_until = NULL WHERE send_key = ?",
                [error, now + delay, now, key],
            )
            return SendResult("retry", None, error, attempts, key)
        if result.status == "retry":
            error = f"gave up after {attempts} attempts: {error}"
        self.store.execute(
            "UPDATE sends SET status = 'failed', last_error = ?, updated_at = ?, lease_until = NULL"
            " WHERE send_key = ?",
            [error, now, key],
        )
        return SendResult("failed", None, error, attempts, key)

    def backoff(self, attempts: int) -> timedelta:
        """Exponential backoff with full jitter for the ledger-level retry schedule."""
        cap = min(
            self.retry_cap.total_seconds(), self.retry_base.total_seconds() * 2 ** (attempts - 1)
        )
        return timedelta(seconds=self.rng.uniform(cap / 2, cap))

    # -- reading -------------------------------------------------------------------------
    def get(self, key: str) -> dict[str, Any] | None:
        df = self.store.df("SELECT * FROM sends WHERE send_key = ?", [key])
        return None if df.empty else df.iloc[0].to_dict()

    def due(self, now: datetime | None = None, limit: int = 500) -> list[str]:
        """Keys ready for another attempt: pending and due, or sending with an expired lease."""
        now = now or self.clock()
        rows = self.store.rows(
            "SELECT send_key FROM sends WHERE (status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?))"
            " OR (status = 'sending' AND lease_until <= ?) ORDER BY created_at LIMIT ?",
            [now, now, limit],
        )
        return [str(r[0]) for r in rows]

    def sends_in_window(
        self,
        profile_id: str,
        since: datetime,
        *,
        channel: str | None = None,
        purpose: str | None = None,
    ) -> int:
        """Delivered sends to a profile since ``since`` (for frequency caps)."""
        return int(
            self.store.scalar(
                "SELECT count(*) FROM sends WHERE profile_id = ? AND status = 'sent' AND sent_at >= ?"
                " AND (CAST(? AS VARCHAR) IS NULL OR channel = ?) AND (CAST(? AS VARCHAR) IS NULL OR purpose = ?)",
                [profile_id, since, channel, channel, purpose, purpose],
            )
            or 0
        )

    def df(self, status: str | None = None, limit: int = 1000) -> pd.DataFrame:
        """Ledger rows (without payloads), newest first."""
        return self.store.df(
            "SELECT send_key, profile_id, channel, purpose, block, block_version, status, attempts,"
            " last_error, provider_id, created_at, sent_at, next_attempt_at FROM sends"
            " WHERE CAST(? AS VARCHAR) IS NULL OR status = ? ORDER BY created_at DESC LIMIT ?",
            [status, status, limit],
        )

    def counts(self) -> dict[str, int]:
        return {
            str(s): int(n)
            for s, n in self.store.rows("SELECT status, count(*) FROM sends GROUP BY 1")
        }
