"""In-memory serving state for the decision API: profile -> traits, segments, updated_at.

Loaded once from the store (``profiles``, ``identities``, a ``traits`` table and a
``memberships`` / ``segment_membership`` table when present) and then kept current by the collector, which
calls :meth:`ServingState.apply_batch` with every durably committed batch of events. Real-time
evaluators plug in with :meth:`ServingState.subscribe`; they receive each committed batch and
write traits / membership changes back through :meth:`set_traits` and :meth:`apply_changes`.

Reads never touch the store: one dict lookup plus a cached, pre-serialised JSON body. Entries
are immutable snapshots replaced atomically, so readers need no lock; writers share one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import orjson
import pyarrow as pa

from microseg.errors import NotFoundError
from microseg.privacy.crypto import KeyRing, normalise_email
from microseg.store import Store, utcnow

log = logging.getLogger("microseg.api.serving")
ID_TYPES: tuple[str, ...] = ("user_id", "email", "device_id", "anonymous_id")
_BARE_LOOKUP: tuple[str, ...] = ("user_id", "device_id", "anonymous_id")
MEMBERSHIP_TABLES: tuple[str, ...] = ("memberships", "segment_membership")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class ProfileState:
    """One profile as the decision API serves it (replace, never mutate)."""

    __slots__ = ("_body", "profile_id", "segments", "traits", "updated_at")

    def __init__(
        self,
        profile_id: str,
        traits: Mapping[str, Any] = _EMPTY,
        segments: frozenset[str] = frozenset(),
        updated_at: datetime | None = None,
    ) -> None:
        self.profile_id = profile_id
        self.traits: Mapping[str, Any] = MappingProxyType(dict(traits))
        self.segments = segments
        self.updated_at = updated_at
        self._body: bytes | None = None

    def replace(self, **changes: Any) -> ProfileState:
        values = {
            "traits": self.traits,
            "segments": self.segments,
            "updated_at": self.updated_at,
            **changes,
        }
        return ProfileState(self.profile_id, **values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile_id": self.profile_id,
            "segments": sorted(self.segments),
            "traits": dict(self.traits),
            "updated_at": self.updated_at,
        }

    def body(self) -> bytes:
        """The decision response as JSON bytes, serialised once per state."""
        if self._body is None:
            self._body = orjson.dumps(self.as_dict(), default=str)
        return self._body


@dataclass(frozen=True)
class CommittedBatch:
    """Events newly stored by one durable commit (duplicates and quarantined rows excluded)."""

    segment: str
    events: pa.Table  # the events' stored columns plus ``profile_id``
    committed_at: datetime


Subscriber = Callable[[CommittedBatch, "ServingState"], None]


def json_value(value: Any) -> Any:
    """A stored value as a JSON-friendly Python value (NaN -> None, decimals -> float)."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


class ServingState:
    """profile_id -> ProfileState plus id key -> profile_id resolution, all in memory."""

    def __init__(self, keys: KeyRing | None = None) -> None:
        self._profiles: dict[str, ProfileState] = {}
        self._ids: dict[str, str] = {}
        self._subscribers: list[Subscriber] = []
        self._write = threading.Lock()
        self._keys = keys
        self.loaded_at: datetime | None = None
        self.batches_applied = 0

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_store(
        cls,
        store: Store,
        keys: KeyRing | None = None,
        *,
        traits_table: str = "traits",
        membership_table: str | None = None,
    ) -> ServingState:
        state = cls(keys)
        state.reload(store, traits_table=traits_table, membership_table=membership_table)
        return state

    def reload(
        self,
        store: Store,
        *,
        traits_table: str = "traits",
        membership_table: str | None = None,
    ) -> None:
        """Rebuild everything from the store (startup, or after a batch segment/trait run)."""
        with store.lock:
            profiles = store.rows(
                "SELECT profile_id, updated_at FROM profiles WHERE merged_into IS NULL"
            )
            ids = store.rows("SELECT id_key, profile_id FROM identities")
            traits = self._load_traits(store, traits_table)
            members = self._load_members(store, membership_table)
        built: dict[str, ProfileState] = {}
        for pid, updated in profiles:
            built[pid] = ProfileState(
                pid, traits.get(pid, _EMPTY), frozenset(members.get(pid, ())), updated
            )
        with self._write:
            self._profiles = built
            self._ids = dict(ids)
            self.loaded_at = utcnow()
        log.info("serving state: %d profiles, %d id keys", len(built), len(ids))

    @staticmethod
    def _load_traits(store: Store, table: str) -> dict[str, dict[str, Any]]:
        if not store.table_exists(table) or "profile_id" not in store.columns(table):
            return {}
        cur = store.execute(f'SELECT * FROM "{table}"')  # table name from settings, quoted
        names = [d[0] for d in cur.description]
        out: dict[str, dict[str, Any]] = {}
        for row in cur.fetchall():
            rec = dict(zip(names, row, strict=True))
            pid = rec.pop("profile_id")
            out[str(pid)] = {k: json_value(v) for k, v in rec.items()}
        return out

    @staticmethod
    def _load_members(store: Store, table: str | None) -> dict[str, set[str]]:
        candidates = [table] if table else list(MEMBERSHIP_TABLES)
        table = next((t for t in candidates if store.table_exists(t)), None)
        if table is None:
            return {}
        cols = store.columns(table)
        segment_col = next(
            (c for c in ("segment", "segment_name", "segment_id") if c in cols), None
        )
        if "profile_id" not in cols or segment_col is None:
            log.warning("table %s has no profile_id/segment columns; memberships not loaded", table)
            return {}
        where = []
        if "exited_at" in cols:
            where.append('"exited_at" IS NULL')
        for flag in ("is_member", "active", "current"):
            if flag in cols:
                where.append(f'"{flag}"')
        query = f'SELECT profile_id, "{segment_col}" FROM "{table}"'
        if where:
            query += " WHERE " + " AND ".join(where)
        out: dict[str, set[str]] = {}
        for pid, seg in store.rows(query):
            out.setdefault(str(pid), set()).add(str(seg))
        return out

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._profiles)

    def resolve(self, ref: str) -> str:
        """Profile id of a profile id, an id key (``user_id:42``, ``email:a@b.c``) or a bare id."""
        profiles, ids = self._profiles, self._ids
        if ref in profiles:
            return ref
        pid = ids.get(ref)
        if pid is None and ":" in ref:
            id_type, _, value = ref.partition(":")
            if id_type == "email" and "@" in value and self._keys is not None:
                pid = ids.get("email:" + self._keys.token(normalise_email(value)))
        if pid is None and ":" not in ref:
            found = {ids[k] for t in _BARE_LOOKUP if (k := f"{t}:{ref}") in ids}
            if len(found) > 1:
                raise NotFoundError(
                    f"'{ref}' matches {len(found)} profiles; use a typed key like user_id:{ref}"
                )
            pid = found.pop() if found else None
        if pid is None or pid not in profiles:
            raise NotFoundError(f"no profile for '{ref}'")
        return pid

    def profile_for_key(self, id_key: str) -> str | None:
        """The profile an id key belongs to, if the state knows the key."""
        return self._ids.get(id_key)

    def get(self, ref: str) -> ProfileState:
        return self._profiles[self.resolve(ref)]

    def stats(self) -> dict[str, Any]:
        return {
            "profiles": len(self._profiles),
            "id_keys": len(self._ids),
            "batches_applied": self.batches_applied,
            "loaded_at": self.loaded_at,
            "subscribers": len(self._subscribers),
        }

    # -- writing --------------------------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(batch, state)`` after every committed batch; returns an unsubscribe."""
        with self._write:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._write:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def apply_batch(self, batch: CommittedBatch, identities: Iterable[tuple[str, str]]) -> None:
        """Register new id keys and profiles of a committed batch, then run the subscribers."""
        pids = batch.events.column("profile_id").to_pylist() if batch.events.num_rows else []
        with self._write:
            ids = self._ids
            for key, pid in identities:
                ids[key] = pid
            profiles = self._profiles
            for pid in set(pids):
                if pid is None:
                    continue
                current = profiles.get(pid)
                profiles[pid] = (
                    ProfileState(pid, updated_at=batch.committed_at)
                    if current is None
                    else current.replace(updated_at=batch.committed_at)
                )
            self.batches_applied += 1
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(batch, self)
            except Exception:  # a plug-in's bug must not stop ingestion or other plug-ins
                log.exception("serving-state subscriber %r failed on %s", callback, batch.segment)

    def add_keys(self, keys: Iterable[tuple[str, str]]) -> None:
        """Register id keys (and their profiles) seen on an acknowledged, not yet imported
        event, so the decision API resolves a new visitor at once; the import confirms them."""
        now = utcnow()
        with self._write:
            for key, pid in keys:
                self._ids.setdefault(key, pid)
                if pid not in self._profiles:
                    self._profiles[pid] = ProfileState(pid, updated_at=now)

    def set_traits(self, profile_id: str, traits: Mapping[str, Any], *, merge: bool = True) -> None:
        """Replace (or merge into) a profile's traits."""
        with self._write:
            current = self._profiles.get(profile_id) or ProfileState(profile_id)
            new = {**current.traits, **traits} if merge else dict(traits)
            self._profiles[profile_id] = current.replace(
                traits={k: json_value(v) for k, v in new.items()}, updated_at=utcnow()
            )

    def forget(self, profile_id: str) -> None:
        """Drop a profile and every id key pointing at it (after an erasure)."""
        with self._write:
            self._profiles.pop(profile_id, None)
            stale = [k for k, pid in self._ids.items() if pid == profile_id]
            for key in stale:
                del self._ids[key]

    def apply_changes(self, changes: Iterable[tuple[str, str, bool]]) -> int:
        """Apply membership changes ``(profile_id, segment, entered)``; returns how many applied."""
        applied = 0
        with self._write:
            for pid, segment, entered in changes:
                current = self._profiles.get(pid) or ProfileState(pid)
                segs = current.segments | {segment} if entered else current.segments - {segment}
                if segs != current.segments:
                    self._profiles[pid] = current.replace(
                        segments=frozenset(segs), updated_at=utcnow()
                    )
                    applied += 1
        return applied
