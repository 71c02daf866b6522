"""Explain membership of one profile and preview a segment before saving it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from microseg.config.models import ProjectSettings
from microseg.segments.ast import Segment, TraitCond, walk
from microseg.segments.catalog import (
    Catalog,
    check_all,
    dependencies,
    realtime_report,
    with_references,
)
from microseg.segments.compiler import compile_segment
from microseg.segments.evaluate import EvalContext, Result, evaluate
from microseg.segments.snapshot import load_profile, population_snapshot
from microseg.store import Store, sql
from microseg.store.duckdb_store import utcnow


@dataclass
class Explanation:
    """Why a profile is (not) in a segment: the tree condition -> value -> pass/fail."""

    segment: str
    profile_id: str
    as_of: datetime
    member: bool
    stored_member: bool | None
    tree: Result

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "profile_id": self.profile_id,
            "as_of": self.as_of.isoformat(),
            "member": self.member,
            "stored_member": self.stored_member,
            "tree": self.tree.to_dict(),
        }

    def lines(self) -> list[str]:
        """Readable indented lines: ✓/✗ condition = value."""
        out = [
            f"{self.profile_id} {'IS' if self.member else 'is NOT'} in {self.segment}"
            f" at {self.as_of.isoformat()}"
        ]

        def walk(r: Result, depth: int) -> None:
            mark = "PASS" if r.passed else "FAIL"
            value = "" if r.children else f" = {r.to_dict().get('value')!r}"
            out.append(f"{'  ' * depth}[{mark}] {r.path}: {r.label}{value}")
            for c in r.children:
                walk(c, depth + 1)

        walk(self.tree, 1)
        return out


def explain(
    store: Store,
    settings: ProjectSettings | None,
    segment: Segment,
    profile_id: str,
    as_of: datetime | None = None,
    segments: Mapping[str, Segment] | None = None,
) -> Explanation:
    """Evaluate ``segment`` for one profile with the actual value of every condition."""
    as_of = as_of or utcnow()
    segs = with_references(segment, {**(segments or {}), segment.name: segment})
    catalog = Catalog.from_store(store, settings)
    check_all(segs, catalog)
    deps = dependencies(segment, segs)
    data = load_profile(store, profile_id, deps.event_types, as_of)
    snap = population_snapshot(store, [segment, *segs.values()], as_of, catalog)
    ctx = EvalContext(as_of, segs, {**catalog.stores, **segment.stores}, snap)
    tree = evaluate(segment.rule, data, ctx)
    stored = None
    if store.table_exists("memberships"):
        known = store.scalar("SELECT count(*) FROM segments WHERE name = ?", [segment.name])
        if known:
            stored = bool(
                store.scalar(
                    "SELECT count(*) FROM memberships WHERE segment = ? AND profile_id = ?",
                    [segment.name, profile_id],
                )
            )
    return Explanation(segment.name, profile_id, as_of, tree.passed, stored, tree)


@dataclass
class Preview:
    """Size and shape of a segment before it is saved."""

    name: str
    size: int
    population: int
    sql: str
    realtime: dict[str, Any]
    sample: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def preview(
    store: Store,
    settings: ProjectSettings | None,
    segment: Segment,
    as_of: datetime | None = None,
    segments: Mapping[str, Segment] | None = None,
    *,
    min_size: int | None = None,
    sample: int = 10,
) -> Preview:
    """Validate against the store and count the members at ``as_of`` without saving anything."""
    as_of = as_of or utcnow()
    # Only this segment and the ones it references are checked: a broken, unrelated segment
    # file must not block previewing another one.
    segs = with_references(segment, {**(segments or {}), segment.name: segment})
    catalog = Catalog.from_store(store, settings)
    check_all(segs, catalog)
    query = compile_segment(segment, as_of, catalog=catalog, segments=segs)
    ids = [str(r[0]) for r in store.rows(query)]
    population = int(store.scalar("SELECT count(*) FROM profiles WHERE merged_into IS NULL") or 0)
    limit = segment.min_size if segment.min_size is not None else (min_size or 0)
    warnings = []
    if len(ids) < limit:
        warnings.append(
            f"segment '{segment.name}' would have {len(ids)} profiles, below the minimum of {limit}"
        )
    if population and len(ids) == population:
        warnings.append("every profile matches: is the rule too broad?")
    for seg in segs.values():
        for _, node in walk(seg.rule):
            if (
                isinstance(node, TraitCond)
                and node.trait.startswith("score.")
                and node.trait not in (catalog.traits or {})
            ):
                warnings.append(
                    f"no scores stored yet for model '{node.trait[6:]}' (segment '{seg.name}'):"
                    " nobody qualifies through it until the model is scored"
                )
    return Preview(
        segment.name,
        len(ids),
        population,
        sql.render(query),
        realtime_report(segment, segs),
        sorted(ids)[:sample],
        warnings,
    )
