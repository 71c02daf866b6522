"""What a segment may refer to (traits, event types, properties, segments, stores) and checks.

``Catalog`` is built from the project settings and, when available, the store (trait columns,
the trait catalog and model scores). ``check_segments`` refuses unknown names with a located
problem and a "did you mean", detects cycles between segments and computes the dependency
index (event types, traits, consents, segments each segment reads) used by the real-time path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from microseg.config.models import NAME_RE, ProjectSettings
from microseg.config.yamlio import Document, Loc
from microseg.errors import DefinitionError, Problem, did_you_mean
from microseg.segments.ast import (
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
    event_list,
    loc_text,
    walk,
)
from microseg.store import Store

SCORE_PREFIX = "score."
CLUSTER_PREFIX = "cluster."  # cluster.<run>: the cluster a discovery run assigned
READABLE_EVENT_COLUMNS = ("session_id", "source", "device_id", "event_type")


@dataclass
class Catalog:
    """Known names. ``traits`` None means "not known here, do not check trait names"."""

    events: dict[str, set[str]] = field(default_factory=dict)  # event type -> properties
    traits: dict[str, str] | None = None  # trait name -> SQL type (upper case)
    stores: dict[str, Point] = field(default_factory=dict)
    check_events: bool = True

    @classmethod
    def from_settings(cls, settings: ProjectSettings | None) -> Catalog:
        if settings is None:
            return cls(check_events=False)
        tax = settings.taxonomy
        events = {name: set(spec.properties) for name, spec in tax.events.items()}
        stores = dict(getattr(settings, "stores", None) or {})
        return cls(events=events, stores=stores, check_events=bool(events))

    @classmethod
    def from_store(cls, store: Store, settings: ProjectSettings | None) -> Catalog:
        """Settings plus the trait columns, trait catalog and scored models in the store."""
        cat = cls.from_settings(settings)
        traits: dict[str, str] = {}
        if store.table_exists("traits"):
            traits.update({k: v.upper() for k, v in store.columns("traits").items()})
            traits.pop("profile_id", None)
        if store.table_exists("trait_catalog"):
            for name, dtype in store.rows("SELECT name, dtype FROM trait_catalog"):
                traits.setdefault(str(name), str(dtype).upper())
        if store.table_exists("scores"):
            for (model,) in store.rows("SELECT DISTINCT model FROM scores"):
                traits[f"{SCORE_PREFIX}{model}"] = "DOUBLE"
        if store.table_exists("cluster_membership"):
            for (run,) in store.rows("SELECT DISTINCT run FROM cluster_membership"):
                traits[f"{CLUSTER_PREFIX}{run}"] = "INTEGER"
        cat.traits = traits
        if not cat.check_events and store.table_exists("events"):
            cat.events = {
                str(t): set(store.columns("events"))
                for (t,) in store.rows("SELECT DISTINCT event_type FROM events")
            }
        return cat

    def properties(self, types: Iterable[str]) -> set[str]:
        props: set[str] = set(READABLE_EVENT_COLUMNS)
        for t in types:
            props |= self.events.get(t, set())
        return props

    def trait_type(self, name: str) -> str:
        if name.startswith(SCORE_PREFIX):
            return "DOUBLE"
        if name.startswith(CLUSTER_PREFIX):
            return "INTEGER"
        return (self.traits or {}).get(name, "VARCHAR")


@dataclass
class Dependencies:
    """What one segment reads; the real-time evaluator re-evaluates on these only."""

    event_types: set[str] = field(default_factory=set)
    traits: set[str] = field(default_factory=set)
    consents: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    time_based: bool = False
    batch_only: list[str] = field(default_factory=list)  # locations evaluated from snapshots


def dependencies(seg: Segment, segments: Mapping[str, Segment]) -> Dependencies:
    """Direct and inherited (through segment references) dependencies of a segment."""
    deps = Dependencies()
    _collect(seg, segments, deps, set())
    return deps


def with_references(seg: Segment, segments: Mapping[str, Segment]) -> dict[str, Segment]:
    """``seg`` plus every segment it reads, directly or through other references."""
    names = dependencies(seg, segments).segments
    return {seg.name: seg, **{n: segments[n] for n in sorted(names) if n in segments}}


def _collect(
    seg: Segment, segments: Mapping[str, Segment], deps: Dependencies, seen: set[str]
) -> None:
    if seg.name in seen:
        return
    seen.add(seg.name)
    for loc, node in walk(seg.rule):
        where = f"{seg.name}:{loc_text(loc)}"
        if isinstance(node, EventCond):
            deps.event_types.update(event_list(node.event))
            deps.time_based |= node.last is not None
        elif isinstance(node, SequenceCond):
            deps.event_types.update(event_list(node.first))
            deps.event_types.update(node.second)
            deps.time_based = True
        elif isinstance(node, RecencyCond):
            deps.event_types.update(event_list(node.recency))
            deps.time_based = True
        elif isinstance(node, TraitCond):
            deps.traits.add(node.trait)
            deps.time_based |= node.trait.startswith(SCORE_PREFIX)  # scores arrive over time
            if isinstance(node.value, Quantile):
                deps.batch_only.append(f"{where} (quantile over the population)")
        elif isinstance(node, GeoCond):
            deps.traits.update({node.geo.lat_trait, node.geo.lon_trait})
        elif isinstance(node, PostalCond):
            deps.traits.add(node.field)
        elif isinstance(node, ConsentCond):
            deps.consents.add(node.consent)
            deps.time_based = True  # consents expire
        elif isinstance(node, SegmentRef):
            deps.segments.add(node.segment)
            if node.segment in segments:
                _collect(segments[node.segment], segments, deps, seen)


def realtime_report(seg: Segment, segments: Mapping[str, Segment]) -> dict[str, Any]:
    """Which parts of a segment follow events in real time and which come from snapshots."""
    deps = dependencies(seg, segments)
    return {
        "realtime_events": sorted(deps.event_types),
        "trait_snapshot": sorted(deps.traits),
        "batch_only": deps.batch_only,
        "scheduled_sweep": deps.time_based,
        "eligible": not deps.batch_only,
    }


class _Checker:
    def __init__(
        self, catalog: Catalog, known_segments: set[str], doc: Document | None, file: str | None
    ) -> None:
        self.catalog = catalog
        self.known_segments = known_segments
        self.doc = doc
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, msg: str, loc: Loc) -> None:
        if self.doc is not None:
            self.problems.append(self.doc.problem(msg, loc))
        else:
            self.problems.append(Problem(msg, self.file, path=loc_text(loc)))

    def events(self, types: list[str], loc: Loc) -> None:
        if not self.catalog.check_events:
            return
        for i, t in enumerate(types):
            if t not in self.catalog.events:
                where = loc if len(types) == 1 else (*loc, i)
                self.problem(
                    f"unknown event type '{t}'{did_you_mean(t, self.catalog.events)}", where
                )

    def props(self, names: Iterable[str], types: list[str], loc: Loc) -> None:
        if not self.catalog.check_events:
            return
        known = self.catalog.properties(types)
        for name in names:
            if name not in known:
                self.problem(
                    f"unknown property '{name}' for {', '.join(types)}{did_you_mean(name, known)}",
                    (*loc, name)
                    if loc and loc[-1] in ("where", "first_where", "then_where")
                    else loc,
                )

    def trait(self, name: str, loc: Loc) -> None:
        traits = self.catalog.traits
        if traits is None or name in traits:
            return
        if name.startswith(SCORE_PREFIX) and NAME_RE.match(name[len(SCORE_PREFIX) :]):
            return  # a model not scored yet: nobody has a score (preview warns)
        self.problem(f"unknown trait '{name}'{did_you_mean(name, traits)}", loc)

    def where(self, where: Mapping[str, Any], types: list[str], loc: Loc) -> None:
        self.props(where, types, loc)
        for name, flt in where.items():
            if isinstance(flt, Ops) and isinstance(flt.value, Quantile):
                self.problem("quantile thresholds apply to traits only", (*loc, name))

    def segment(self, seg: Segment) -> None:
        for loc, node in walk(seg.rule):
            if isinstance(node, TraitCond):
                self.trait(node.trait, (*loc, "trait"))
                if isinstance(node.value, Quantile) and node.op not in ("gt", "gte", "lt", "lte"):
                    self.problem("a quantile threshold needs gt, gte, lt or lte", (*loc, node.op))
            elif isinstance(node, EventCond):
                types = event_list(node.event)
                self.events(types, (*loc, "event"))
                self.where(node.where, types, (*loc, "where"))
                extra = [*node.same, *([node.of] if node.of else [])]
                self.props(extra, types, (*loc, "same" if node.same else "of"))
            elif isinstance(node, SequenceCond):
                first = event_list(node.first)
                self.events(first, (*loc, "first"))
                self.events(node.second, (*loc, "then" if node.followed else "not_then"))
                self.where(node.first_where, first, (*loc, "first_where"))
                self.where(node.then_where, node.second, (*loc, "then_where"))
            elif isinstance(node, RecencyCond):
                types = event_list(node.recency)
                self.events(types, (*loc, "recency"))
                self.where(node.where, types, (*loc, "where"))
            elif isinstance(node, GeoCond):
                self.trait(node.geo.lat_trait, (*loc, "geo"))
                self.trait(node.geo.lon_trait, (*loc, "geo"))
                known = {**self.catalog.stores, **seg.stores}
                for name in node.geo.store_names():
                    if name not in known:
                        self.problem(
                            f"unknown store '{name}'{did_you_mean(name, known)}; declare it under"
                            " 'stores:' in the segment file",
                            (*loc, "geo"),
                        )
            elif isinstance(node, PostalCond):
                self.trait(node.field, (*loc, "field"))
            elif isinstance(node, SegmentRef):
                if node.segment not in self.known_segments:
                    self.problem(
                        f"unknown segment '{node.segment}'"
                        f"{did_you_mean(node.segment, self.known_segments)}",
                        (*loc, "segment"),
                    )
            elif isinstance(node, (ConsentCond, BucketCond, Not)):
                continue


def check_segment(
    seg: Segment,
    catalog: Catalog,
    known_segments: Iterable[str],
    doc: Document | None = None,
    file: str | None = None,
) -> list[Problem]:
    """Problems of one segment against the catalog (empty list when valid)."""
    checker = _Checker(catalog, set(known_segments), doc, file)
    checker.segment(seg)
    return checker.problems


def find_cycle(segments: Mapping[str, Segment]) -> list[str] | None:
    """A list of names forming a reference cycle (first == last), or None."""
    graph = {
        name: [n.segment for _, n in walk(seg.rule) if isinstance(n, SegmentRef)]
        for name, seg in segments.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for nxt in graph.get(name, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt in graph and state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in graph:
        if state.get(name) is None:
            cycle = visit(name)
            if cycle:
                return cycle
    return None


def check_all(
    segments: Mapping[str, Segment],
    catalog: Catalog,
    docs: Mapping[str, Document] | None = None,
) -> None:
    """Check a set of segments together; raises one DefinitionError listing every problem."""
    problems: list[Problem] = []
    for name, seg in segments.items():
        doc = (docs or {}).get(name)
        problems.extend(check_segment(seg, catalog, segments, doc, None if doc else name))
    cycle = find_cycle(segments)
    if cycle:
        doc = (docs or {}).get(cycle[0])
        msg = "segment references form a cycle: " + " -> ".join(cycle)
        problems.append(doc.problem(msg, ("rule",)) if doc else Problem(msg, cycle[0]))
    if problems:
        raise DefinitionError(problems)
