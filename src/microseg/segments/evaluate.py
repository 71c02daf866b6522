"""Evaluate a segment for ONE profile in Python, with the value of every condition.

This is the twin of the SQL compiler (same time and NULL semantics, tested to agree): the
real-time evaluator runs it on the affected profile only, and ``explain`` runs it to show
why a profile is (not) in a segment. ``next_change`` says when a time-based condition of the
profile can flip next (a window expiring, a drop-off settling), for the scheduler sweep.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from microseg.segments.ast import (
    All,
    Any_,
    BucketCond,
    ConsentCond,
    EventCond,
    GeoCond,
    Not,
    Ops,
    Point,
    PostalCond,
    Quantile,
    RecencyCond,
    Segment,
    SegmentRef,
    SequenceCond,
    TraitCond,
    Windowed,
    event_list,
    loc_text,
)
from microseg.segments.catalog import SCORE_PREFIX
from microseg.segments.compile_events import passes
from microseg.segments.compiler import EARTH_RADIUS_KM


@dataclass(frozen=True)
class Ev:
    """One event of a profile: its time and its fields (properties, session_id...)."""

    ts: datetime
    props: Mapping[str, Any]

    def __lt__(self, other: Ev) -> bool:
        return self.ts < other.ts


@dataclass
class ConsentRow:
    recorded_at: datetime
    granted: bool
    expires_at: datetime | None = None


@dataclass
class ProfileData:
    """What the evaluator knows about one profile."""

    profile_id: str
    events: dict[str, list[Ev]] = field(default_factory=dict)  # event type -> sorted by ts
    traits: dict[str, Any] = field(default_factory=dict)
    consents: dict[str, list[ConsentRow]] = field(default_factory=dict)
    scores: dict[str, list[tuple[datetime, int, float | None]]] = field(default_factory=dict)

    def trait(self, name: str, as_of: datetime) -> Any:
        """A trait value; ``score.<model>`` is the latest score recorded at or before as_of."""
        if name.startswith(SCORE_PREFIX) and name[len(SCORE_PREFIX) :] in self.scores:
            known = [s for s in self.scores[name[len(SCORE_PREFIX) :]] if s[0] <= as_of]
            return max(known, key=lambda s: (s[0], s[1]))[2] if known else None
        return self.traits.get(name)

    def add_event(self, event_type: str, ev: Ev) -> None:
        bisect.insort(self.events.setdefault(event_type, []), ev)

    def of_types(self, types: list[str]) -> list[Ev]:
        if len(types) == 1:
            return self.events.get(types[0], [])
        found: list[Ev] = []
        for t in types:
            found.extend(self.events.get(t, ()))
        found.sort()
        return found


@dataclass
class Snapshot:
    """Population-level values from the last batch (quantile thresholds)."""

    quantiles: dict[tuple[str, float], float | None] = field(default_factory=dict)


@dataclass
class EvalContext:
    as_of: datetime
    segments: Mapping[str, Segment] = field(default_factory=dict)
    stores: dict[str, Point] = field(default_factory=dict)
    snapshot: Snapshot = field(default_factory=Snapshot)


@dataclass
class Result:
    """The outcome of one condition: pass/fail, the actual value, sub-results."""

    path: str
    label: str
    passed: bool
    value: Any = None
    children: list[Result] = field(default_factory=list)

    def leaves(self) -> dict[str, Result]:
        if not self.children:
            return {self.path: self}
        out: dict[str, Result] = {}
        for child in self.children:
            out.update(child.leaves())
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "condition": self.label, "passed": self.passed}
        if not self.children or self.value is not None:
            out["value"] = _jsonable(self.value)
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- values
def _comparable(value: Any, target: Any) -> tuple[Any, Any]:
    if isinstance(target, (int, float)) and not isinstance(target, bool) and isinstance(value, str):
        try:
            return float(value), target
        except ValueError:
            return value, str(target)
    return value, target


def compare_value(value: Any, op: str, target: Any) -> bool:
    """Python twin of the SQL comparison; a missing value never passes."""
    if value is None:
        return False
    if op == "between":
        v, lo = _comparable(value, target[0])
        _, hi = _comparable(value, target[1])
        return bool(lo <= v <= hi)
    if op in ("in", "not_in"):
        found = any(_comparable(value, t)[0] == _comparable(value, t)[1] for t in target)
        return found if op == "in" else not found
    v, t = _comparable(value, target)
    if op == "eq":
        return bool(v == t)
    if op == "ne":
        return bool(v != t)
    return bool({"gt": v > t, "gte": v >= t, "lt": v < t, "lte": v <= t}[op])


def test_value(value: Any, flt: Ops | Any, threshold: float | None = None) -> bool:
    """Python twin of ``compiler.value_test``."""
    if not isinstance(flt, Ops):
        return compare_value(value, "eq", flt)
    op, target = flt.op, flt.value
    if op == "exists":
        return (value is not None) == bool(target)
    if value is None:
        return False
    if op == "contains":
        if isinstance(value, (list, tuple)):
            return target in value
        return str(target) in str(value)
    if op == "regex":
        return re.search(target, str(value)) is not None
    if isinstance(target, Quantile):
        return threshold is not None and compare_value(value, op, threshold)
    return compare_value(value, op, target)


def in_window(ev: Ev, window: Windowed | None, as_of: datetime) -> bool:
    return bool(select_events(ProfileData("", {"x": [ev]}), ["x"], {}, window, as_of))


def select_events(
    data: ProfileData,
    types: list[str],
    where: Mapping[str, Any],
    window: Windowed | None,
    as_of: datetime,
) -> list[Ev]:
    """Events of some types inside the window at ``as_of`` passing the property filters."""
    lower, inclusive, until = None, True, None
    if window is not None:
        lower, inclusive, _ = window.bounds(as_of)
        until = window.until
    evs = data.of_types(types)  # sorted by time: the window is a slice found by bisection
    hi = bisect.bisect_right(evs, as_of, key=_ts)
    if until is not None:
        hi = min(hi, bisect.bisect_left(evs, until, key=_ts))
    lo = 0
    if lower is not None:
        lo = (bisect.bisect_left if inclusive else bisect.bisect_right)(evs, lower, key=_ts)
    if not where:
        return evs[lo:hi]
    return [e for e in evs[lo:hi] if all(test_value(e.props.get(p), f) for p, f in where.items())]


def _ts(ev: Ev) -> datetime:
    return ev.ts


def aggregate(cond: EventCond, evs: list[Ev]) -> Any:
    if cond.aggregate == "count":
        return len(evs)
    raw = [e.props.get(cond.of or "") for e in evs]
    values: list[Any] = [v for v in raw if v is not None]
    if cond.aggregate == "count_distinct":
        return len(set(values))
    if cond.aggregate == "sum":
        return sum(values) if values else 0
    if not values:
        return None
    if cond.aggregate == "avg":
        return sum(values) / len(values)
    return min(values) if cond.aggregate == "min" else max(values)


def haversine_km(lat: float, lon: float, point: Point) -> float:
    """Same formula as the SQL template (degrees in, kilometres out)."""
    a = math.pow(math.sin(math.radians(point.lat - lat) / 2), 2) + math.cos(
        math.radians(lat)
    ) * math.cos(math.radians(point.lat)) * math.pow(math.sin(math.radians(point.lon - lon) / 2), 2)
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def bucket_of(profile_id: str, salt: str, of: int) -> int:
    """int(md5('salt:profile_id')[:8], 16) % of — identical to the SQL expression."""
    digest = hashlib.md5(f"{salt}:{profile_id}".encode()).hexdigest()
    return int(digest[:8], 16) % of


def latest_consent(rows: list[ConsentRow], as_of: datetime) -> ConsentRow | None:
    known = [r for r in rows if r.recorded_at <= as_of]
    if not known:
        return None
    latest = max(r.recorded_at for r in known)
    tied = [r for r in known if r.recorded_at == latest]
    return next((r for r in tied if not r.granted), tied[0])


# --------------------------------------------------------------------------- evaluation
def evaluate(
    cond: Any, data: ProfileData, ctx: EvalContext, loc: tuple[str | int, ...] = ("rule",)
) -> Result:
    """Evaluate a condition tree for one profile at ``ctx.as_of``."""
    path = loc_text(loc)
    label = cond.label
    if isinstance(cond, (All, Any_)):
        items = cond.all if isinstance(cond, All) else cond.any
        kids = [evaluate(c, data, ctx, (*loc, cond.kind, i)) for i, c in enumerate(items)]
        ok = all(k.passed for k in kids) if isinstance(cond, All) else any(k.passed for k in kids)
        return Result(path, label, ok, None, kids)
    if isinstance(cond, Not):
        kid = evaluate(cond.not_, data, ctx, (*loc, "not"))
        return Result(path, label, not kid.passed, None, [kid])
    if isinstance(cond, SegmentRef):
        other = ctx.segments[cond.segment]
        sub = EvalContext(ctx.as_of, ctx.segments, {**ctx.stores, **other.stores}, ctx.snapshot)
        kid = evaluate(other.rule, data, sub, (*loc, f"segment:{cond.segment}"))
        return Result(path, label, kid.passed, None, [kid])
    passed, value = _leaf(cond, data, ctx)
    return Result(path, label, passed, value)


def _leaf(cond: Any, data: ProfileData, ctx: EvalContext) -> tuple[bool, Any]:
    as_of = ctx.as_of
    if isinstance(cond, TraitCond):
        value = data.trait(cond.trait, as_of)
        threshold = None
        if isinstance(cond.value, Quantile):
            threshold = ctx.snapshot.quantiles.get((cond.trait, cond.value.quantile))
            return test_value(value, cond, threshold), {"value": value, "threshold": threshold}
        return test_value(value, cond), value
    if isinstance(cond, EventCond):
        evs = select_events(data, event_list(cond.event), cond.where, cond, as_of)
        if cond.grouped:
            groups: dict[tuple[Any, ...], list[Ev]] = {}
            for e in evs:
                key = tuple(
                    ([e.props.get("session_id")] if cond.per_session else [])
                    + [e.props.get(p) for p in cond.same]
                )
                if any(k is None for k in key):
                    continue
                groups.setdefault(key, []).append(e)
            values = {k: aggregate(cond, g) for k, g in groups.items()}
            hits = {k: v for k, v in values.items() if v is not None and passes(v, cond.compare)}
            best = max((v for v in values.values() if v is not None), default=None)
            return bool(hits), {"best_group": best, "groups_passing": len(hits)}
        value = aggregate(cond, evs)
        if value is None:
            return False, None
        return passes(value, cond.compare), value
    if isinstance(cond, SequenceCond):
        return _sequence(cond, data, as_of)
    if isinstance(cond, RecencyCond):
        evs = select_events(data, event_list(cond.recency), cond.where, None, as_of)
        latest = max((e.ts for e in evs), default=None)
        cutoff = as_of - cond.duration
        if latest is None:
            return cond.or_never, None
        ok = latest > cutoff if cond.newer_than is not None else latest <= cutoff
        return ok, latest
    if isinstance(cond, GeoCond):
        lat, lon = data.traits.get(cond.geo.lat_trait), data.traits.get(cond.geo.lon_trait)
        if lat is None or lon is None:
            return False, None
        points = _points(cond, ctx)
        dist = min(haversine_km(float(lat), float(lon), p) for p in points)
        return dist <= cond.geo.radius_km, {"km": round(dist, 4)}
    if isinstance(cond, PostalCond):
        code = data.traits.get(cond.field)
        if code is None:
            return False, None
        text = str(code)
        ok = any(
            text.startswith(c[:-1]) if c.endswith("*") else text == c for c in cond.postal_code
        )
        return ok, text
    if isinstance(cond, ConsentCond):
        row = latest_consent(data.consents.get(cond.consent, []), as_of)
        if row is None:
            return False, None
        ok = row.granted and (row.expires_at is None or row.expires_at > as_of)
        return ok, {
            "granted": row.granted,
            "recorded_at": row.recorded_at,
            "expires_at": row.expires_at,
        }
    if isinstance(cond, BucketCond):
        b = bucket_of(data.profile_id, cond.bucket.salt, cond.bucket.of)
        lo, hi = cond.bucket.range
        return lo <= b < hi, b
    raise TypeError(f"not a condition: {cond!r}")


def _points(cond: GeoCond, ctx: EvalContext) -> list[Point]:
    spec = cond.geo
    if spec.lat is not None and spec.lon is not None:
        return [Point(lat=spec.lat, lon=spec.lon)]
    return [ctx.stores[n] for n in spec.store_names()]


def _sequence(cond: SequenceCond, data: ProfileData, as_of: datetime) -> tuple[bool, Any]:
    within = cond.within_delta
    firsts = select_events(data, event_list(cond.first), cond.first_where, cond, as_of)
    seconds = select_events(data, cond.second, cond.then_where, None, as_of)
    times = [b.ts for b in seconds]
    for a in firsts:
        deadline = a.ts + within
        i = bisect.bisect_right(times, a.ts)
        followed = i < len(times) and times[i] <= deadline
        if cond.followed and followed:
            return True, {"first_at": a.ts, "then_at": times[i]}
        if not cond.followed and not followed and deadline <= as_of:
            return True, {"first_at": a.ts, "settled_at": deadline}
    pending = [a.ts for a in firsts if a.ts + within > as_of]
    return False, {"firsts": len(firsts), "pending": len(pending)}


# --------------------------------------------------------------------------- time boundaries
def next_change(cond: Any, data: ProfileData, ctx: EvalContext, after: datetime) -> datetime | None:
    """The earliest time > ``after`` when this condition's value can change without an event.

    Event lists are sorted by time, so each family's first boundary after ``after`` is found by
    bisection instead of listing every boundary."""
    if isinstance(cond, (All, Any_)):
        children = cond.all if isinstance(cond, All) else cond.any
        return _earliest(next_change(c, data, ctx, after) for c in children)
    if isinstance(cond, Not):
        return next_change(cond.not_, data, ctx, after)
    if isinstance(cond, SegmentRef):
        return next_change(ctx.segments[cond.segment].rule, data, ctx, after)
    if isinstance(cond, EventCond):
        return _window_next(cond, data.of_types(event_list(cond.event)), after)
    if isinstance(cond, SequenceCond):
        firsts = data.of_types(event_list(cond.first))
        return _earliest(
            (
                _window_next(cond, firsts, after),
                _first_after(firsts, after, cond.within_delta),
                _first_after(data.of_types(cond.second), after),
            )
        )
    if isinstance(cond, RecencyCond):
        evs = data.of_types(event_list(cond.recency))
        return _earliest((_first_after(evs, after), _first_after(evs, after, cond.duration)))
    if isinstance(cond, TraitCond) and cond.trait.startswith(SCORE_PREFIX):
        scores = data.scores.get(cond.trait[len(SCORE_PREFIX) :], [])
        return _earliest(s[0] for s in scores if s[0] > after)
    if isinstance(cond, ConsentCond):
        rows = data.consents.get(cond.consent, [])
        return _earliest(
            t
            for row in rows
            for t in (row.recorded_at, row.expires_at)
            if t is not None and t > after
        )
    return None


def _earliest(times: Iterable[datetime | None]) -> datetime | None:
    found = [t for t in times if t is not None]
    return min(found) if found else None


def _first_after(
    evs: list[Ev], after: datetime, shift: timedelta = timedelta(0)
) -> datetime | None:
    """The smallest ``e.ts + shift`` later than ``after`` (``evs`` sorted by time)."""
    i = bisect.bisect_right(evs, after - shift, key=lambda e: e.ts)
    return evs[i].ts + shift if i < len(evs) else None


def _window_next(window: Windowed, evs: list[Ev], after: datetime) -> datetime | None:
    """First boundary of a windowed condition after ``after``: an event becoming visible, an
    event leaving the rolling window, or an absolute window opening or closing."""
    span = window.rolling
    return _earliest(
        (
            _first_after(evs, after),
            _first_after(evs, after, span) if span is not None else None,
            window.until if window.until is not None and window.until > after else None,
            window.since if window.since is not None and window.since > after else None,
        )
    )
