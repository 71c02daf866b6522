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
CHANGE_SLACK = timedelta(seconds=30)
"""Incremental context refreshes look at rows updated this long before the last one seen
(writes commit shortly after they are stamped)."""
MAX_INCREMENTAL = 1_000
"""More changed profiles than this: one bulk rebuild instead of single reads."""


class ConsentCache:
    """(profile id, purpose) -> (granted, expires_at, recorded_at) of the latest record.

    Change detection is by the number of watched consent rows (one cheap count per refresh):
    when it moves (records added, imported with old dates, or deleted by retention/erasure)
    the whole map is rebuilt in one query and swapped in."""

    def __init__(self, purposes: Iterable[str], *, when_missing: bool = False) -> None:
        self.purposes = sorted(set(purposes))
        self.when_missing = when_missing
        self._latest: dict[tuple[str, str], tuple[bool, datetime | None, datetime]] = {}
        self._lock = threading.Lock()
        self._rows: int | None = None  # watched rows at the last load

    @staticmethod
    def _merge(
        into: dict[tuple[str, str], tuple[bool, datetime | None, datetime]],
        rows: Iterable[tuple[Any, ...]],
    ) -> int:
        changed = 0
        for pid, purpose, granted, expires_at, recorded_at in rows:
            key = (str(pid), str(purpose))
            current = into.get(key)
            # the newest record wins; on a tie a revocation wins (as the segment compiler)
            if (
                current is None
                or recorded_at > current[2]
                or (recorded_at == current[2] and not granted)
            ):
                into[key] = (bool(granted), expires_at, recorded_at)
                changed += 1
        return changed

    def _apply(self, rows: Iterable[tuple[Any, ...]]) -> int:
        with self._lock:
            return self._merge(self._latest, rows)

    def _count(self, store: Store) -> int:
        with store.lock:
            return int(
                store.scalar(
                    "SELECT count(*) FROM consents WHERE list_contains(?, purpose)",
                    [self.purposes],
                )
            )

    def load(self, store: Store) -> int:
        """Rebuild from every consent record of the watched purposes; returns entries."""
        if not self.purposes or not store.table_exists("consents"):
            return 0
        with store.lock:
            rows = store.rows(
                "SELECT profile_id, purpose, granted, expires_at, recorded_at FROM consents"
                " WHERE list_contains(?, purpose)",
                [self.purposes],
            )
        built: dict[tuple[str, str], tuple[bool, datetime | None, datetime]] = {}
        self._merge(built, rows)
        with self._lock:
            self._latest = built
            self._rows = len(rows)
        return len(built)

    def refresh(self, store: Store) -> bool:
        """Reload when the watched consent rows changed in number; returns whether it did."""
        if not self.purposes or not store.table_exists("consents"):
            return False
        if self._rows is not None and self._count(store) == self._rows:
            return False
        self.load(store)
        return True

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
        if self._rows is not None:
            self._rows += 1  # our own row: no reload needed

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

    def __len__(self) -> int:
        return len(self._hits)

    def prune(self, now: datetime | None = None) -> int:
        """Forget (profile, cap key) counters whose newest impression is outside the key's
        window (they count 0 anyway); returns how many were dropped.

        Without it every profile ever served a capped decision keeps an entry for the life
        of the server."""
        at = now or utcnow()
        with self._lock:
            stale = [
                k
                for k, hits in self._hits.items()
                if not hits or k[1] not in self.limits or hits[-1] < at - self.limits[k[1]][1]
            ]
            for k in stale:
                del self._hits[k]
        return len(stale)

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
        self._versions: dict[str, datetime] = {}  # profile -> newest update read
        self._last_marks: tuple[Any, ...] = ()
        self.refreshed_at: datetime | None = None
        self.misses = 0
        self.full_refreshes = 0

    def _pii_fields(self) -> list[str]:
        if self.keys is None or not self.fields or not self.store.table_exists("pii_vault"):
            return []
        with self.store.lock:
            present = {str(r[0]) for r in self.store.rows("SELECT DISTINCT field FROM pii_vault")}
        return [f for f in self.fields if f in present]

    def _marks(self) -> tuple[Any, ...]:
        """(rows, newest update) of the watched attributes and PII: a change detector."""
        with self.store.lock:
            attrs = self.store.rows(
                "SELECT count(*), max(updated_at) FROM profile_attributes"
                " WHERE list_contains(?, name)",
                [self.fields],
            )[0]
            pii = (
                self.store.rows(
                    "SELECT count(*), max(updated_at) FROM pii_vault WHERE list_contains(?, field)",
                    [self.fields],
                )[0]
                if self.store.table_exists("pii_vault")
                else (0, None)
            )
        return (*attrs, *pii)

    def _updated(self, since: datetime) -> dict[str, datetime]:
        """profile id -> newest update of its watched attributes / PII at or after ``since``."""
        out: dict[str, datetime] = {}
        queries = [
            "SELECT profile_id, max(updated_at) FROM profile_attributes"
            " WHERE list_contains(?, name) AND updated_at >= ? GROUP BY profile_id"
        ]
        if self.store.table_exists("pii_vault"):
            queries.append(
                "SELECT profile_id, max(updated_at) FROM pii_vault"
                " WHERE list_contains(?, field) AND updated_at >= ? GROUP BY profile_id"
            )
        with self.store.lock:
            for sql in queries:
                for pid, at in self.store.rows(sql, [self.fields, since]):
                    if at is not None and (str(pid) not in out or at > out[str(pid)]):
                        out[str(pid)] = at
        return out

    def refresh(self) -> int:
        """Rebuild every profile's fields in bulk (a few queries); returns profiles cached.

        A bulk PII read is one ``pii.decrypt`` audit row listing the profiles, so this runs
        at startup, rarely, and when rows were deleted; :meth:`refresh_changed` keeps the
        cache current in between."""
        marks = self._marks() if self.fields else ()
        with self.store.lock:
            pids = self.store.rows("SELECT profile_id FROM profiles WHERE merged_into IS NULL")
        built: dict[str, dict[str, Any]] = {str(p): {} for (p,) in pids}
        versions: dict[str, datetime] = {}
        if self.fields:
            versions = self._updated(datetime.min)
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
        self._versions = versions
        self._last_marks = marks
        self.refreshed_at = utcnow()
        self.full_refreshes += 1
        return len(built)

    def refresh_changed(self) -> int:
        """Re-read the profiles whose watched attributes or PII changed since they were read
        (by ``updated_at``); a bulk rebuild when rows were deleted (e.g. an erasure) or more
        than :data:`MAX_INCREMENTAL` profiles changed. Returns how many profiles were read."""
        if self.refreshed_at is None:
            return self.refresh()
        if not self.fields:
            return 0
        marks = self._marks()
        if marks == self._last_marks:
            return 0  # nothing written since: one cheap query per refresh
        deleted = marks[0] < self._last_marks[0] or marks[2] < self._last_marks[2]
        newest = max((m for m in (self._last_marks[1], self._last_marks[3]) if m), default=None)
        since = (newest - CHANGE_SLACK) if newest is not None else datetime.min
        changed = {
            pid: at
            for pid, at in self._updated(since).items()
            if at > self._versions.get(pid, datetime.min)
        }
        if deleted or len(changed) > MAX_INCREMENTAL:
            return self.refresh()
        for pid, at in changed.items():
            self.load_one(pid, miss=False)
            self._versions[pid] = at
        self._last_marks = marks
        self.refreshed_at = utcnow()
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
