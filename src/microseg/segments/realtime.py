"""Real-time membership: per-event updates of the affected profile only, plus a sweep.

``RealtimeEvaluator.on_event`` files the event into the profile's per-condition state (its
event buffers by type), re-evaluates only the segments whose dependency index contains the
event type, and schedules the profile's next time boundary (a window count expiring, a
drop-off settling, a consent expiring) on a heap. ``sweep(now)`` settles every boundary up
to ``now`` without waiting for another event. Quantile thresholds come from the last batch
snapshot; traits from the trait snapshot (``on_traits`` updates them).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from microseg.config.models import ProjectSettings
from microseg.segments.ast import (
    EventCond,
    Point,
    RecencyCond,
    Segment,
    SequenceCond,
    event_columns,
    event_list,
    parse_duration,
    walk,
)
from microseg.segments.catalog import Catalog, Dependencies, check_all, dependencies
from microseg.segments.evaluate import (
    ConsentRow,
    Ev,
    EvalContext,
    ProfileData,
    Result,
    Snapshot,
    evaluate,
    next_change,
)
from microseg.segments.snapshot import (
    all_profiles,
    consent_rows,
    population_snapshot,
    score_rows,
    segments_by_name,
    trait_rows,
)
from microseg.store import Store


@dataclass(frozen=True)
class MembershipChange:
    """A profile entered or exited a segment, when and why."""

    segment: str
    profile_id: str
    change: str  # "entered" | "exited"
    at: datetime
    reason: str
    source: str = "realtime"


class RealtimeEvaluator:
    """Keeps memberships current event by event; see the module docstring."""

    def __init__(
        self,
        segments: Mapping[str, Segment] | Iterable[Segment],
        *,
        stores: Mapping[str, Point] | None = None,
        snapshot: Snapshot | None = None,
    ) -> None:
        self.segments = segments_by_name(segments)
        self.stores = dict(stores or {})
        self.snapshot = snapshot or Snapshot()
        self.deps: dict[str, Dependencies] = {
            n: dependencies(s, self.segments) for n, s in self.segments.items()
        }
        self.by_event: dict[str, set[str]] = {}
        self.by_trait: dict[str, set[str]] = {}
        self.by_consent: dict[str, set[str]] = {}
        for name, dep in self.deps.items():
            for t in dep.event_types:
                self.by_event.setdefault(t, set()).add(name)
            for t in dep.traits:
                self.by_trait.setdefault(t, set()).add(name)
            for c in dep.consents:
                self.by_consent.setdefault(c, set()).add(name)
        self.timed = sorted(n for n, d in self.deps.items() if d.time_based)
        self.horizon = self._horizons()
        # event types whose conditions group by session (they need the import's session id)
        self.session_types = frozenset(
            t
            for seg in self.segments.values()
            for _, node in walk(seg.rule)
            if isinstance(node, EventCond) and node.per_session
            for t in event_list(node.event)
        )
        # the event fields a condition can read (an event keeps only these in memory)
        self.fields = frozenset({"profile_id", *event_columns(self.segments.values())[1]})
        self.profiles: dict[str, ProfileData] = {}
        self.members: dict[str, set[str]] = {n: set() for n in self.segments}
        self.leaf_state: dict[tuple[str, str], dict[str, bool]] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._due: dict[str, datetime] = {}
        self._next: dict[str, dict[str, datetime | None]] = {}  # pid -> segment -> boundary
        self.clock: datetime | None = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_store(
        cls,
        store: Store,
        settings: ProjectSettings | None,
        segments: Mapping[str, Segment] | Iterable[Segment],
        *,
        start: datetime,
        history: bool = False,
    ) -> RealtimeEvaluator:
        """Bootstrap from the store's trait snapshot, scores, consents and profiles at ``start``.

        With ``history`` (what a server wants) memberships at ``start`` come from the batch SQL
        and each profile's still-relevant events are loaded, so events collected after
        ``start`` continue the story. Without it no event is loaded and every profile is
        evaluated as having none: feed history yourself with ``on_event`` (replays, tests).
        """
        from microseg.segments.bootstrap import batch_members, history_events

        segs = segments_by_name(segments)
        catalog = Catalog.from_store(store, settings)
        check_all(segs, catalog)
        stores = dict(catalog.stores)
        for s in segs.values():
            stores.update(s.stores)
        rt = cls(
            segs, stores=stores, snapshot=population_snapshot(store, segs.values(), start, catalog)
        )
        traits = trait_rows(store, None, start)
        consents = consent_rows(store, None)
        scores = score_rows(store, None)
        events = history_events(store, segs, rt.horizon, start) if history else {}
        for pid in all_profiles(store):
            rt.profiles[pid] = ProfileData(
                pid,
                events.get(pid, {}),
                traits.get(pid, {}),
                consents.get(pid, {}),
                scores.get(pid, {}),
            )
        if history:
            members = batch_members(store, catalog, segs, start)
            rt.members = {name: members.get(name, set()) for name in rt.segments}
            # only profiles with events, consents or scores can have a time boundary ahead
            for pid in {*events, *consents, *scores}:
                if pid in rt.profiles:
                    rt._schedule(pid, start, rt.timed)
        else:
            for pid in rt.profiles:
                rt._evaluate(pid, list(rt.segments), start)
                rt._schedule(pid, start, rt.timed)
        rt.clock = start
        return rt

    def _horizons(self) -> dict[str, timedelta | None]:
        """How long events of each type must be kept (None: forever)."""
        out: dict[str, timedelta | None] = {}

        def need(types: Iterable[str], span: timedelta | None) -> None:
            for t in types:
                if t in out and out[t] is None:
                    continue
                out[t] = None if span is None else max(span, out.get(t) or timedelta(0))

        for seg in self.segments.values():
            for _, node in walk(seg.rule):
                if isinstance(node, EventCond):
                    need(event_list(node.event), node.rolling)
                elif isinstance(node, SequenceCond):
                    within = parse_duration(node.within)
                    span = None if node.rolling is None else node.rolling + within
                    need([*event_list(node.first), *node.second], span)
                elif isinstance(node, RecencyCond):
                    need(event_list(node.recency), None)
        return out

    # -- inputs ---------------------------------------------------------------------------
    def forget(self, profile_id: str) -> None:
        """Drop everything known about a profile (after an erasure); no change is emitted."""
        self.profiles.pop(profile_id, None)
        for members in self.members.values():
            members.discard(profile_id)
        for name in self.segments:
            self.leaf_state.pop((profile_id, name), None)
        self._next.pop(profile_id, None)
        self._due.pop(profile_id, None)  # its heap entry is skipped when popped

    def replace(
        self, profile_id: str, data: ProfileData | None, now: datetime
    ) -> list[MembershipChange]:
        """Swap in a profile's state as re-read from the store (``None``: it is not stored).

        Used when the import disagreed with an event the evaluator saw provisionally (a
        duplicate of an old event, a quarantined one): memberships are re-derived from the
        stored data and the resulting changes returned."""
        at = max(now, self.clock or now)
        changes = self.sweep(at)
        if data is None:
            for name in self.segments:
                if profile_id in self.members[name]:
                    changes.append(
                        MembershipChange(name, profile_id, "exited", at, "event not stored")
                    )
            self.forget(profile_id)
            return changes
        for etype in list(data.events):
            self._prune(data, etype, at)
        self.profiles[profile_id] = data
        for name in self.segments:
            self.leaf_state.pop((profile_id, name), None)
        changes.extend(self._evaluate(profile_id, list(self.segments), at))
        self._schedule(profile_id, at, self.timed)
        return changes

    def knows(self, profile_id: str) -> bool:
        """True while the evaluator holds state for the profile (not forgotten)."""
        return profile_id in self.profiles

    def profile(self, profile_id: str) -> ProfileData:
        return self.profiles[profile_id]

    def _ensure(self, profile_id: str, now: datetime) -> tuple[ProfileData, bool]:
        data = self.profiles.get(profile_id)
        if data is not None:
            return data, False
        data = ProfileData(profile_id)
        self.profiles[profile_id] = data
        return data, True

    def on_event(
        self, event: Mapping[str, Any], now: datetime | None = None
    ) -> list[MembershipChange]:
        """Apply one collected event (fields + ``profile_id``, ``event_type``, ``ts``)."""
        pid = str(event["profile_id"])
        etype = str(event["event_type"])
        ts: datetime = event["ts"]
        at = max(now or ts, self.clock or ts)
        changes = self.sweep(at)
        data, new = self._ensure(pid, at)
        affected = set(self.segments) if new else set(self.by_event.get(etype, ()))
        if etype in self.horizon:
            fields = self.fields
            data.add_event(etype, Ev(ts, {k: v for k, v in event.items() if k in fields}))
            self._prune(data, etype, at)
        if affected:
            changes.extend(self._evaluate(pid, sorted(affected), at))
            self._schedule(pid, at, affected)
        return changes

    def on_traits(
        self, profile_id: str, values: Mapping[str, Any], now: datetime
    ) -> list[MembershipChange]:
        """New trait values for a profile (from the incremental trait updater)."""
        changes = self.sweep(now)
        data, new = self._ensure(profile_id, now)
        data.traits.update(values)
        affected = (
            set(self.segments) if new else {s for t in values for s in self.by_trait.get(t, ())}
        )
        changes.extend(self._evaluate(profile_id, sorted(affected), now))
        self._schedule(profile_id, now, affected)
        return changes

    def on_consent(
        self,
        profile_id: str,
        purpose: str,
        granted: bool,
        recorded_at: datetime,
        expires_at: datetime | None = None,
    ) -> list[MembershipChange]:
        """A consent decision; segments needing that purpose are re-evaluated at once."""
        now = max(recorded_at, self.clock or recorded_at)
        changes = self.sweep(now)
        data, new = self._ensure(profile_id, now)
        data.consents.setdefault(purpose, []).append(ConsentRow(recorded_at, granted, expires_at))
        affected = set(self.segments) if new else set(self.by_consent.get(purpose, ()))
        changes.extend(self._evaluate(profile_id, sorted(affected), now))
        self._schedule(profile_id, now, affected)
        return changes

    def on_score(
        self, profile_id: str, model: str, version: int, score: float, scored_at: datetime
    ) -> list[MembershipChange]:
        """A new model score: segments reading ``score.<model>`` are re-evaluated."""
        now = max(scored_at, self.clock or scored_at)
        changes = self.sweep(now)
        data, new = self._ensure(profile_id, now)
        data.scores.setdefault(model, []).append((scored_at, version, score))
        trait = f"score.{model}"
        affected = set(self.segments) if new else set(self.by_trait.get(trait, ()))
        changes.extend(self._evaluate(profile_id, sorted(affected), now))
        self._schedule(profile_id, now, affected)
        return changes

    def sweep(self, now: datetime, limit: int | None = None) -> list[MembershipChange]:
        """Settle every time boundary up to ``now`` (each at its own time); with ``limit``,
        at most that many profiles, the rest on the next call (see :meth:`has_due`)."""
        changes: list[MembershipChange] = []
        settled = 0
        while self._heap and self._heap[0][0] <= now:
            if limit is not None and settled >= limit:
                return changes  # the clock moves once everything up to `now` is settled
            due, pid = heapq.heappop(self._heap)
            if self._due.get(pid) != due:
                continue  # superseded
            settled += 1
            del self._due[pid]
            nexts = self._next.get(pid, {})
            names = [n for n in self.timed if nexts.get(n) == due]
            changes.extend(self._evaluate(pid, names, due))
            self._schedule(pid, due, names)
            # a profile gone quiet gets no event to prune its buffers: drop what no window
            # can read any more here, or every one-time visitor's events stay for ever
            self._prune_all(self.profiles[pid], due)
        self.clock = max(now, self.clock or now)
        return changes

    def has_due(self, now: datetime) -> bool:
        """Whether a time boundary up to ``now`` is still to settle (a heap entry may be
        superseded: then the next sweep only drops it)."""
        return bool(self._heap) and self._heap[0][0] <= now

    # -- state ----------------------------------------------------------------------------
    def _prune(self, data: ProfileData, etype: str, now: datetime) -> None:
        span = self.horizon.get(etype)
        evs = data.events.get(etype)
        if span is None or not evs:
            return
        cutoff = now - span
        keep = next((i for i, e in enumerate(evs) if e.ts > cutoff), len(evs))
        if keep:
            del evs[:keep]

    def _prune_all(self, data: ProfileData, now: datetime) -> None:
        """Prune every event type of a profile at ``now``; empty buffers are dropped."""
        for etype in list(data.events):
            self._prune(data, etype, now)
            if not data.events[etype]:
                del data.events[etype]

    def _ctx(self, at: datetime) -> EvalContext:
        return EvalContext(at, self.segments, self.stores, self.snapshot)

    def _evaluate(self, pid: str, names: Iterable[str], at: datetime) -> list[MembershipChange]:
        data = self.profiles[pid]
        changes: list[MembershipChange] = []
        for name in names:
            seg = self.segments[name]
            ctx = EvalContext(at, self.segments, {**self.stores, **seg.stores}, self.snapshot)
            result = evaluate(seg.rule, data, ctx)
            leaves = {p: r.passed for p, r in result.leaves().items()}
            before = self.leaf_state.get((pid, name), {})
            self.leaf_state[(pid, name)] = leaves
            was = pid in self.members[name]
            if result.passed == was:
                continue
            (self.members[name].add if result.passed else self.members[name].discard)(pid)
            changes.append(
                MembershipChange(
                    name,
                    pid,
                    "entered" if result.passed else "exited",
                    at,
                    _reason(result, before),
                )
            )
        return changes

    def _schedule(self, pid: str, after: datetime, names: Iterable[str]) -> None:
        """Recompute the next boundary of the given segments; keep the profile's earliest."""
        data = self.profiles[pid]
        ctx = self._ctx(after)
        nexts = self._next.setdefault(pid, {})
        for n in names:
            if n in self.deps and self.deps[n].time_based:
                nexts[n] = next_change(self.segments[n].rule, data, ctx, after)
        due = min((t for t in nexts.values() if t is not None), default=None)
        if due is None:
            self._due.pop(pid, None)
            return
        if self._due.get(pid) == due:
            return
        self._due[pid] = due
        heapq.heappush(self._heap, (due, pid))
        if len(self._heap) > 2 * len(self._due) + 1024:
            # superseded entries are only skipped when popped: drop them before they pile up
            self._heap = [(d, p) for p, d in self._due.items()]
            heapq.heapify(self._heap)

    # -- reading --------------------------------------------------------------------------
    def members_of(self, segment: str) -> set[str]:
        return set(self.members[segment])

    def is_member(self, segment: str, profile_id: str) -> bool:
        return profile_id in self.members.get(segment, set())

    def pending_timers(self) -> int:
        return len(self._due)

    def next_due(self) -> datetime | None:
        """When the scheduler should call ``sweep`` next (None: nothing pending)."""
        return min(self._due.values(), default=None)

    def save_timers(self, store: Store) -> int:
        """Write the per-profile next-boundary times to ``segment_timers`` (for schedulers)."""
        rows = sorted(self._due.items())
        with store.transaction():
            store.execute("DELETE FROM segment_timers")
            if rows:
                store.con.executemany("INSERT INTO segment_timers VALUES (?, ?)", rows)
        return len(rows)


def _reason(result: Result, before: Mapping[str, bool]) -> str:
    """Which conditions changed value (or, on first evaluation, which decided)."""
    leaves = result.leaves()
    flipped = [r for p, r in leaves.items() if p in before and before[p] != r.passed]
    if not flipped:
        flipped = [r for r in leaves.values() if r.passed == result.passed] or list(leaves.values())
    return "; ".join(
        f"{r.path} ({r.label}) -> {'true' if r.passed else 'false'}" for r in flipped[:5]
    )
