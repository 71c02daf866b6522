"""Bounded in-memory rings of each profile's recent events, for "did X within T" rules.

Only the event types (and properties) that decision rules mention are kept, at most
``per_type`` events per profile and type, no older than ``lookback``. The rings are filled
from the store at startup (one query) and then by every committed batch of the collector
(:meth:`RecentEvents.__call__` is a :class:`~microseg.api.serving.ServingState` subscriber).
Reads are plain dict/deque scans: no store access on the request path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from microseg.config.models import CORE_EVENT_COLUMNS
from microseg.store import Store, naive_utc, utcnow
from microseg.store.sql import col, ident

Matchers = Mapping[str, Any]
ALL = "*"
"""In a watched property set: keep every property of the event type."""
_NOT_PROPS = frozenset(CORE_EVENT_COLUMNS) | {"profile_id"}


@dataclass(frozen=True, slots=True)
class RecentEvent:
    """One kept event: type, time (naive UTC) and the watched properties it carries."""

    event_type: str
    ts: datetime
    props: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"event_type": self.event_type, "ts": self.ts.isoformat(), **self.props}


def matches(props: Mapping[str, Any], where: Matchers) -> bool:
    """Every filter holds: equal to a scalar, or one of a list of values."""
    for key, wanted in where.items():
        value = props.get(key)
        if isinstance(wanted, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


class RecentEvents:
    """profile id -> event type -> deque of the newest events (bounded, thread-safe writes)."""

    def __init__(
        self,
        watch: Mapping[str, Iterable[str]],
        lookback: timedelta,
        *,
        per_type: int = 32,
    ) -> None:
        self.watch: dict[str, frozenset[str]] = {t: frozenset(p) for t, p in watch.items()}
        self.lookback = lookback
        self.per_type = per_type
        self._rings: dict[str, dict[str, deque[RecentEvent]]] = {}
        self._lock = threading.Lock()
        self.events_seen = 0

    def forget(self, profile_id: str) -> None:
        """Drop everything kept about a profile (after an erasure)."""
        with self._lock:
            self._rings.pop(profile_id, None)

    # -- writing ----------------------------------------------------------------------------
    def add(self, profile_id: str, event_type: str, ts: datetime, props: Mapping[str, Any]) -> bool:
        """Keep one event if its type is watched; returns whether it was kept."""
        wanted = self.watch.get(event_type)
        if wanted is None:
            return False
        if ALL in wanted:
            kept = {k: v for k, v in props.items() if k not in _NOT_PROPS and v is not None}
        else:
            kept = {k: v for k, v in props.items() if k in wanted and v is not None}
        event = RecentEvent(event_type, naive_utc(ts), kept)
        with self._lock:
            types = self._rings.setdefault(profile_id, {})
            ring = types.get(event_type)
            if ring is None:
                ring = types[event_type] = deque(maxlen=self.per_type)
            if ring and ring[-1].ts > event.ts:  # late arrival: keep the ring in time order
                items = sorted([*ring, event], key=lambda e: e.ts)
                ring.clear()
                ring.extend(items[-self.per_type :])
            else:
                ring.append(event)
            self.events_seen += 1
        return True

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add event rows carrying ``profile_id``, ``event_type`` and ``ts``; returns kept."""
        kept = 0
        for row in rows:
            pid, etype, ts = row.get("profile_id"), row.get("event_type"), row.get("ts")
            if pid is None or etype not in self.watch or not isinstance(ts, datetime):
                continue
            kept += self.add(str(pid), str(etype), ts, row)
        return kept

    def __call__(self, batch: Any, state: Any = None) -> None:
        """ServingState subscriber: keep the watched events of a committed batch."""
        events = batch.events
        if not events.num_rows or "event_type" not in events.column_names:
            return
        types = set(events.column("event_type").to_pylist())
        if types.isdisjoint(self.watch):
            return
        wanted = {"profile_id", "event_type", "ts"} | set().union(*self.watch.values())
        names = [c for c in events.column_names if ALL in wanted or c in wanted]
        self.add_rows(events.select(names).to_pylist())

    def load(self, store: Store, now: datetime | None = None) -> int:
        """Fill the rings from the store: the newest ``per_type`` events per profile and type
        within ``lookback``. Returns how many events were loaded."""
        if not self.watch or not store.table_exists("events"):
            return 0
        since = (now or utcnow()) - self.lookback
        present = set(store.columns("events"))
        wanted = set().union(*self.watch.values())
        props = sorted(p for p in present - _NOT_PROPS if ALL in wanted or p in wanted)
        ranked = exp.Window(
            this=exp.RowNumber(),
            partition_by=[col("profile_id", "i"), col("event_type", "e")],
            order=exp.Order(expressions=[exp.Ordered(this=col("ts", "e"), desc=True)]),
        )
        query = (
            exp.select(
                col("profile_id", "i"),
                col("event_type", "e"),
                col("ts", "e"),
                *(col(p, "e") for p in props),
            )
            .from_(exp.Table(this=ident("events"), alias=exp.TableAlias(this=ident("e"))))
            .join(
                exp.Table(this=ident("identities"), alias=exp.TableAlias(this=ident("i"))),
                on=exp.EQ(this=col("id_key", "i"), expression=col("id_key", "e")),
            )
            .where(
                exp.and_(
                    exp.func("list_contains", exp.Placeholder(), col("event_type", "e")),
                    exp.GTE(this=col("ts", "e"), expression=exp.Placeholder()),
                )
            )
            .qualify(exp.LTE(this=ranked, expression=exp.Literal.number(self.per_type)))
            .order_by(col("ts", "e"))
        )
        names = ["profile_id", "event_type", "ts", *props]
        with store.lock:
            rows = store.rows(query, [sorted(self.watch), since])
        return self.add_rows(dict(zip(names, row, strict=True)) for row in rows)

    def prune(self, now: datetime | None = None, *, chunk: int = 1_000) -> int:
        """Drop events older than ``lookback`` and empty profiles; returns events dropped.

        Works in chunks of profiles, yielding the interpreter between them, so a prune of a
        large state does not stall requests served meanwhile."""
        cutoff = (now or utcnow()) - self.lookback
        dropped = 0
        pids = list(self._rings)
        for start in range(0, len(pids), chunk):
            with self._lock:
                for pid in pids[start : start + chunk]:
                    types = self._rings.get(pid)
                    if types is None:
                        continue
                    for etype in list(types):
                        ring = types[etype]
                        while ring and ring[0].ts < cutoff:
                            ring.popleft()
                            dropped += 1
                        if not ring:
                            del types[etype]
                    if not types:
                        del self._rings[pid]
            time.sleep(0)  # let request threads / the event loop run
        return dropped

    # -- reading ----------------------------------------------------------------------------
    def latest(
        self, profile_id: str, event_type: str, where: Matchers, since: datetime
    ) -> RecentEvent | None:
        """The newest kept event of the type matching ``where`` at or after ``since``."""
        ring = self._rings.get(profile_id, {}).get(event_type)
        if not ring:
            return None
        for event in reversed(tuple(ring)):  # a snapshot: writers may append meanwhile
            if event.ts < since:
                return None
            if matches(event.props, where):
                return event
        return None

    def of(self, profile_id: str) -> list[RecentEvent]:
        """Every kept event of a profile, oldest first."""
        rings = self._rings.get(profile_id, {})
        return sorted((e for ring in list(rings.values()) for e in tuple(ring)), key=lambda e: e.ts)

    def __len__(self) -> int:
        return len(self._rings)
