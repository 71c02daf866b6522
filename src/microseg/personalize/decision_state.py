"""In-memory state the decision engine reads per request: consents, impressions, profile context.

* :class:`ConsentCache` — the latest consent per profile and purpose (only purposes rules use),
  loaded in bulk, refreshed incrementally in the background and updated at once by
  :meth:`ConsentCache.record`.
* :class:`ImpressionCounter` — recent impressions per profile and cap key, bounded to the
  largest cap; new impressions are written to ``decision_impressions`` in batches
  (:meth:`ImpressionCounter.flush`), and loaded back at startup so caps survive restarts.
* :class:`ContextCache` — the template fields of every profile (profile attributes and
  decrypted PII the templates mention), precomputed in bulk, refreshed in bulk in the
  background; a profile created after the last refresh is read once from the store.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa

from microseg.personalize.content import read_pii, read_pii_many
from microseg.privacy.crypto import KeyRing
from microseg.store import Store, utcnow

AUDIT_ACTOR = "decision-engine"
"""Who the audit trail names for the engine's PII reads."""
CONSENT_SLACK = timedelta(minutes=10)
"""Incremental consent refreshes re-read rows recorded this long before the last one seen."""


class ConsentCache:
    """(profile id, purpose) -> (granted, expires_at, recorded_at) of the latest record."""

    def __init__(self, purposes: Iterable[str], *, when_missing: bool = False) -> None:
        self.purposes = sorted(set(purposes))
        self.when_missing = when_missing
        self._latest: dict[tuple[str, str], tuple[bool, datetime | None, datetime]] = {}
        self._lock = threading.Lock()
        self.watermark: datetime | None = None

    def _apply(self, rows: Iterable[tuple[Any, ...]]) -> int:
        changed = 0
        with self._lock:
            for pid, purpose, granted, expires_at, recorded_at in rows:
                key = (str(pid), str(purpose))
                current = self._latest.get(key)
                # the newest record wins; on a tie a revocation wins (as the segment compiler)
                if (
                    current is None
                    or recorded_at > current[2]
                    or (recorded_at == current[2] and not granted)
                ):
                    self._latest[key] = (bool(granted), expires_at, recorded_at)
                    changed += 1
                if self.watermark is None or recorded_at > self.watermark:
                    self.watermark = recorded_at
        return changed

    def load(self, store: Store) -> int:
        """Read every consent record of the watched purposes; returns entries changed."""
        if not self.purposes or not store.table_exists("consents"):
            return 0
        with store.lock:
            rows = store.rows(
                "SELECT profile_id, purpose, granted, expires_at, recorded_at FROM consents"
                " WHERE list_contains(?, purpose)",
                [self.purposes],
            )
        return self._apply(rows)

    def refresh(self, store: Store) -> int:
        """Apply records newer than the last seen (minus a slack); returns entries changed."""
        if self.watermark is None:
            return self.load(store)
        if not self.purposes:
            return 0
        with store.lock:
            rows = store.rows(
                "SELECT profile_id, purpose, granted, expires_at, recorded_at FROM consents"
                " WHERE list_contains(?, purpose) AND recorded_at >= ?",
                [self.purposes, self.watermark - CONSENT_SLACK],
            )
        return self._apply(rows)

    def record(
        self,
        store: Store,
        profile_id: str,
        purpose: str,
        granted: bool,
        *,
        source: str = "decision-api",
        expires_at: datetime | None = None,
        recorded_at: datetime | None = None,
    ) -> None:
        """Store a consent decision and apply it in memory at once."""
        at = recorded_at or utcnow()
        with store.lock:
            store.execute(
                "INSERT INTO consents VALUES (?, ?, ?, ?, ?, ?)",
                [profile_id, purpose, granted, source, at, expires_at],
            )
        self._apply([(profile_id, purpose, granted, expires_at, at)])

    def observe(
        self,
        profile_id: str,
        purpose: str,
        granted: bool,
        recorded_at: datetime,
        expires_at: datetime | None = None,
    ) -> bool:
        """Apply a consent record already stored elsewhere (e.g. by the privacy consent API)
        without waiting for the next refresh; returns whether it changed the answer."""
        return self._apply([(profile_id, purpose, granted, expires_at, recorded_at)]) > 0

    def granted(self, profile_id: str, purpose: str, now: datetime) -> bool:
        """Whether the latest record grants the purpose and has not expired."""
        found = self._latest.get((profile_id, purpose))
        if found is None:
            return self.when_missing
        granted, expires_at, _ = found
        return granted and (expires_at is None or expires_at > now)

    def __len__(self) -> int:
        return len(self._latest)


class ImpressionCounter:
    """Recent impressions per (profile, cap key), with batched persistence."""

    def __init__(self, limits: Mapping[str, tuple[int, timedelta]]) -> None:
        # cap key -> (largest max, longest window) over the rules sharing the key
        self.limits = dict(limits)
        self._hits: dict[tuple[str, str], deque[datetime]] = {}
        self._pending: list[tuple[str, str, datetime]] = []
        self._lock = threading.Lock()
        self.flushed = 0

    @property
    def horizon(self) -> timedelta:
        return max((w for _, w in self.limits.values()), default=timedelta(0))

    def count(self, profile_id: str, key: str, since: datetime) -> int:
        hits = self._hits.get((profile_id, key))
        return sum(1 for t in tuple(hits) if t >= since) if hits else 0

    def record(self, profile_id: str, key: str, at: datetime, *, persist: bool = True) -> None:
        limit = self.limits.get(key)
        if limit is None:
            return
        with self._lock:
            hits = self._hits.get((profile_id, key))
            if hits is None:
                hits = self._hits[(profile_id, key)] = deque(maxlen=limit[0])
            hits.append(at)
            if persist:
                self._pending.append((profile_id, key, at))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def load(self, store: Store, now: datetime | None = None) -> int:
        """Impressions still inside their cap window, from ``decision_impressions``."""
        if not self.limits or not store.table_exists("decision_impressions"):
            return 0
        since = (now or utcnow()) - self.horizon
        with store.lock:
            rows = store.rows(
                "SELECT profile_id, cap_key, served_at FROM decision_impressions"
                " WHERE served_at >= ? AND list_contains(?, cap_key) ORDER BY served_at",
                [since, sorted(self.limits)],
            )
        for pid, key, at in rows:
            self.record(str(pid), str(key), at, persist=False)
        return len(rows)

    def flush(self, store: Store, now: datetime | None = None) -> int:
        """Write pending impressions in one insert and drop rows older than every window."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        table = pa.table(
            {
                "profile_id": pa.array([b[0] for b in batch], pa.string()),
                "cap_key": pa.array([b[1] for b in batch], pa.string()),
                "served_at": pa.array([b[2] for b in batch], pa.timestamp("us")),
            }
        )
        cutoff = (now or utcnow()) - self.horizon
        try:
            with store.lock, store.transaction():
                store.con.register("decision_impressions_new", table)
                try:
                    store.execute(
                        "INSERT INTO decision_impressions"
                        " SELECT profile_id, cap_key, served_at FROM decision_impressions_new"
                    )
                finally:
                    store.con.unregister("decision_impressions_new")
                store.execute("DELETE FROM decision_impressions WHERE served_at < ?", [cutoff])
        except BaseException:
            with self._lock:  # keep them for the next flush
                self._pending[:0] = batch
            raise
        self.flushed += len(batch)
        return len(batch)


def _coerce(value: str | None, value_num: float | None) -> Any:
    """A profile attribute value: the text (ISO dates as dates) or else the number."""
    if value is None:
        return value_num
    try:
        return date.fromisoformat(value) if len(value) == 10 and value[4] == "-" else value
    except ValueError:
        return value


class ContextCache:
    """profile id -> template fields (attributes + PII the templates use), precomputed."""

    def __init__(self, store: Store, keys: KeyRing | None, fields: Iterable[str]) -> None:
        self.store = store
        self.keys = keys
        self.fields = sorted(set(fields))
        self._ctx: dict[str, Mapping[str, Any]] = {}
        self.refreshed_at: datetime | None = None
        self.misses = 0

    def _pii_fields(self) -> list[str]:
        if self.keys is None or not self.fields or not self.store.table_exists("pii_vault"):
            return []
        with self.store.lock:
            present = {str(r[0]) for r in self.store.rows("SELECT DISTINCT field FROM pii_vault")}
        return [f for f in self.fields if f in present]

    def refresh(self) -> int:
        """Rebuild every profile's fields in bulk (a few queries); returns profiles cached.

        A bulk PII read is one ``pii.decrypt`` audit row listing the profiles, so run this
        at startup and rarely; :meth:`refresh_changed` keeps the cache current between."""
        started = utcnow()
        with self.store.lock:
            pids = self.store.rows("SELECT profile_id FROM profiles WHERE merged_into IS NULL")
        built: dict[str, dict[str, Any]] = {str(p): {} for (p,) in pids}
        if self.fields:
            with self.store.lock:
                rows = self.store.rows(
                    "SELECT profile_id, name, value, value_num FROM profile_attributes"
                    " WHERE list_contains(?, name)",
                    [self.fields],
                )
            for pid, name, value, num in rows:
                built.setdefault(str(pid), {})[str(name)] = _coerce(value, num)
            for field in self._pii_fields():
                assert self.keys is not None  # _pii_fields() is empty without keys
                with self.store.lock:  # audited by read_pii_many (one entry per field)
                    values = read_pii_many(
                        self.store, self.keys, list(built), field, actor=AUDIT_ACTOR
                    )
                for pid, value in values.items():
                    built.setdefault(pid, {})[field] = value
        self._ctx = dict(built.items())
        self.refreshed_at = started
        return len(built)

    def refresh_changed(self) -> int:
        """Re-read only profiles whose attributes or PII changed since the last refresh
        (``updated_at``); returns how many. Deletions wait for the next full refresh (or
        :meth:`forget`)."""
        if self.refreshed_at is None:
            return self.refresh()
        if not self.fields:
            return 0
        started = utcnow()
        since = self.refreshed_at - CONSENT_SLACK
        with self.store.lock:
            changed = {
                str(r[0])
                for r in self.store.rows(
                    "SELECT DISTINCT profile_id FROM profile_attributes"
                    " WHERE updated_at >= ? AND list_contains(?, name)",
                    [since, self.fields],
                )
            }
            if self._pii_fields():
                changed |= {
                    str(r[0])
                    for r in self.store.rows(
                        "SELECT DISTINCT profile_id FROM pii_vault"
                        " WHERE updated_at >= ? AND list_contains(?, field)",
                        [since, self.fields],
                    )
                }
        for pid in changed:
            self.load_one(pid, miss=False)
        self.refreshed_at = started
        return len(changed)

    def forget(self, profile_id: str) -> None:
        """Drop a profile's cached fields (e.g. after an erasure)."""
        self._ctx.pop(profile_id, None)

    def get(self, profile_id: str) -> Mapping[str, Any] | None:
        """The cached fields, or None when this profile was not seen by the last refresh."""
        return self._ctx.get(profile_id)

    def load_one(self, profile_id: str, *, miss: bool = True) -> Mapping[str, Any]:
        """Read one profile's fields from the store and cache them (a cache miss)."""
        self.misses += miss
        ctx: dict[str, Any] = {}
        if self.fields:
            with self.store.lock:
                rows = self.store.rows(
                    "SELECT name, value, value_num FROM profile_attributes"
                    " WHERE profile_id = ? AND list_contains(?, name)",
                    [profile_id, self.fields],
                )
                pii = self._pii_fields()
                secrets = (
                    read_pii(self.store, self.keys, profile_id, pii, actor=AUDIT_ACTOR)
                    if pii and self.keys is not None
                    else {}
                )
            for name, value, num in rows:
                ctx[str(name)] = _coerce(value, num)
            ctx.update(secrets)
        self._ctx[profile_id] = ctx
        return ctx

    def __len__(self) -> int:
        return len(self._ctx)
