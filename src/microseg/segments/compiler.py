"""Compile a segment AST to one sqlglot SELECT of profile ids (never string-built SQL).

Every leaf condition becomes a set test on the outer profile id
(``p.profile_id IN (SELECT profile_id ...)``, or ``NOT IN`` of the complement when a
profile with no rows satisfies it, e.g. ``count < 2``); ``all``/``any``/``not`` become
AND/OR/NOT over those tests, so SQL's three-valued logic never leaks into membership.
Trait-side leaves are compiled here; event-side leaves in ``compile_events``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from microseg.errors import DefinitionError
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
)
from microseg.segments.catalog import CLUSTER_PREFIX, SCORE_PREFIX, Catalog
from microseg.store import sql

PID = "profile_id"
EARTH_RADIUS_KM = 6371.0088
_HAVERSINE = sql.parse_static(
    "2 * 6371.0088 * ASIN(SQRT(POWER(SIN(RADIANS(:plat - :lat) / 2), 2)"
    " + COS(RADIANS(:lat)) * COS(RADIANS(:plat)) * POWER(SIN(RADIANS(:plon - :lon) / 2), 2)))"
)
_LATEST_SCORE = sql.parse_static(
    "SELECT profile_id, score FROM scores WHERE model = :model AND scored_at <= :as_of"
    " QUALIFY ROW_NUMBER() OVER (PARTITION BY profile_id ORDER BY scored_at DESC, version DESC) = 1"
)
_CLUSTER = sql.parse_static(
    "SELECT profile_id, cluster AS score FROM cluster_membership"
    " WHERE run = :run AND assigned_at <= :as_of"
)
_LATEST_CONSENT = sql.parse_static(
    "SELECT profile_id FROM (SELECT profile_id, granted, expires_at, ROW_NUMBER() OVER"
    " (PARTITION BY profile_id ORDER BY recorded_at DESC, granted ASC) AS rn FROM consents"
    " WHERE purpose = :purpose AND recorded_at <= :as_of) AS c"
    " WHERE rn = 1 AND granted AND (expires_at IS NULL OR expires_at > :as_of)"
)
_BUCKET = sql.parse_static("CAST('0x' || SUBSTR(MD5(:salt || ':' || :pid), 1, 8) AS BIGINT) % :of")


@dataclass
class CompileContext:
    """Everything a compilation needs besides the AST."""

    as_of: datetime
    catalog: Catalog = field(default_factory=Catalog)
    segments: Mapping[str, Segment] = field(default_factory=dict)
    stores: dict[str, Point] = field(default_factory=dict)
    events_source: str | None = None  # table with profile_id + event columns (batch runs)
    depth: int = 0
    computed: frozenset[str] = frozenset()  # segments whose memberships are current (same run)


def ts(value: datetime) -> exp.Expr:
    """A TIMESTAMP literal built by the AST."""
    return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), exp.DataType.build("TIMESTAMP"))


def fill(template: exp.Expr, **values: exp.Expr) -> exp.Expr:
    """Replace :name placeholders of a fixed template with expression nodes."""
    return exp.replace_placeholders(template.copy(), **values)


def outer_pid() -> exp.Column:
    return sql.col(PID, "p")


def member_of(query: exp.Select, negate: bool = False) -> exp.Expr:
    """``p.profile_id IN (query)`` or its negation."""
    test = exp.In(this=outer_pid(), query=exp.Subquery(this=query))
    return exp.Not(this=test) if negate else test


def compare(column: exp.Expr, op: str, value: Any, threshold: exp.Expr | None = None) -> exp.Expr:
    """``column <op> value`` for one comparison operator."""
    rhs = (
        threshold
        if threshold is not None
        else (sql.lit(value) if op not in ("between", "in", "not_in") else None)
    )
    if op == "eq":
        return exp.EQ(this=column, expression=rhs)
    if op == "ne":
        return exp.NEQ(this=column, expression=rhs)
    if op == "gt":
        return exp.GT(this=column, expression=rhs)
    if op == "gte":
        return exp.GTE(this=column, expression=rhs)
    if op == "lt":
        return exp.LT(this=column, expression=rhs)
    if op == "lte":
        return exp.LTE(this=column, expression=rhs)
    if op == "between":
        return exp.Between(this=column, low=sql.lit(value[0]), high=sql.lit(value[1]))
    if op == "in":
        return exp.In(this=column, expressions=[sql.lit(v) for v in value])
    if op == "not_in":
        return exp.Not(this=exp.In(this=column, expressions=[sql.lit(v) for v in value]))
    raise ValueError(f"not a comparison: {op}")


def value_test(
    column: exp.Expr,
    ops: Ops | Any,
    sql_type: str = "VARCHAR",
    threshold: exp.Expr | None = None,
) -> exp.Expr:
    """The SQL test of a trait or property against an ``Ops`` (or a scalar meaning eq)."""
    if not isinstance(ops, Ops):
        return compare(column, "eq", ops)
    op, value = ops.op, ops.value
    if op == "exists":
        is_null = exp.Is(this=column, expression=exp.Null())
        return exp.Not(this=is_null) if value else is_null
    if op == "contains":
        name = "list_contains" if sql_type.endswith("[]") else "contains"
        return sql.func(name, column, sql.lit(value))
    if op == "regex":
        return exp.RegexpLike(this=exp.cast(column, "VARCHAR"), expression=sql.lit(value))
    return compare(column, op, value, threshold)


# --------------------------------------------------------------------------- trait family
def trait_source(name: str, ctx: CompileContext) -> tuple[exp.Expr, exp.Expr]:
    """(FROM item, value column) of a trait: a traits column, the latest model score or the
    cluster a saved discovery run assigned."""
    if name.startswith((SCORE_PREFIX, CLUSTER_PREFIX)):
        scores = (
            fill(_LATEST_SCORE, model=sql.lit(name[len(SCORE_PREFIX) :]), as_of=ts(ctx.as_of))
            if name.startswith(SCORE_PREFIX)
            else fill(_CLUSTER, run=sql.lit(name[len(CLUSTER_PREFIX) :]), as_of=ts(ctx.as_of))
        )
        return exp.Subquery(this=scores, alias=exp.TableAlias(this=sql.ident("t"))), sql.col(
            "score", "t"
        )
    source = exp.Table(this=sql.ident("traits"), alias=exp.TableAlias(this=sql.ident("t")))
    return source, sql.col(name, "t")


def quantile_threshold(name: str, q: float, ctx: CompileContext) -> exp.Expr:
    """Scalar subquery: the q-quantile (continuous) of a trait over all profiles."""
    source, column = trait_source(name, ctx)
    query = exp.select(sql.func("quantile_cont", column, sql.lit(q))).from_(source)
    return exp.Subquery(this=query)


def compile_trait(cond: TraitCond, ctx: CompileContext) -> exp.Expr:
    source, column = trait_source(cond.trait, ctx)
    if cond.op == "exists" and cond.exists is False:
        present = (
            exp.select(sql.col(PID, "t"))
            .from_(source)
            .where(exp.Not(this=exp.Is(this=column, expression=exp.Null())))
        )
        return member_of(present, negate=True)
    threshold = None
    if isinstance(cond.value, Quantile):
        threshold = quantile_threshold(cond.trait, cond.value.quantile, ctx)
    test = value_test(column, cond, ctx.catalog.trait_type(cond.trait), threshold)
    return member_of(exp.select(sql.col(PID, "t")).from_(source).where(test))


def haversine_km(lat: exp.Expr, lon: exp.Expr, point: Point) -> exp.Expr:
    return fill(_HAVERSINE, lat=lat, lon=lon, plat=sql.lit(point.lat), plon=sql.lit(point.lon))


def geo_points(cond: GeoCond, ctx: CompileContext) -> list[Point]:
    spec = cond.geo
    if spec.lat is not None and spec.lon is not None:
        return [Point(lat=spec.lat, lon=spec.lon)]
    stores = ctx.stores
    missing = [n for n in spec.store_names() if n not in stores]
    if missing:
        raise DefinitionError(f"unknown store {missing[0]!r}; declare it under 'stores:'")
    return [stores[n] for n in spec.store_names()]


def compile_geo(cond: GeoCond, ctx: CompileContext) -> exp.Expr:
    lat, lon = sql.col(cond.geo.lat_trait, "t"), sql.col(cond.geo.lon_trait, "t")
    near = [
        exp.LTE(this=haversine_km(lat, lon, pt), expression=sql.lit(cond.geo.radius_km))
        for pt in geo_points(cond, ctx)
    ]
    test = exp.and_(
        exp.Not(this=exp.Is(this=lat, expression=exp.Null())),
        exp.Not(this=exp.Is(this=lon, expression=exp.Null())),
        exp.or_(*near),
    )
    source = exp.Table(this=sql.ident("traits"), alias=exp.TableAlias(this=sql.ident("t")))
    return member_of(exp.select(sql.col(PID, "t")).from_(source).where(test))


def compile_postal(cond: PostalCond, ctx: CompileContext) -> exp.Expr:
    code = exp.cast(sql.col(cond.field, "t"), "VARCHAR")
    exact = [c for c in cond.postal_code if not c.endswith("*")]
    prefixes = [c[:-1] for c in cond.postal_code if c.endswith("*")]
    tests: list[exp.Expr] = []
    if exact:
        tests.append(exp.In(this=code, expressions=[sql.lit(c) for c in exact]))
    tests.extend(sql.func("starts_with", code, sql.lit(p)) for p in prefixes)
    source = exp.Table(this=sql.ident("traits"), alias=exp.TableAlias(this=sql.ident("t")))
    return member_of(exp.select(sql.col(PID, "t")).from_(source).where(exp.or_(*tests)))


def compile_consent(cond: ConsentCond, ctx: CompileContext) -> exp.Expr:
    query = fill(_LATEST_CONSENT, purpose=sql.lit(cond.consent), as_of=ts(ctx.as_of))
    assert isinstance(query, exp.Select)
    return member_of(query)


def bucket_expr(pid: exp.Expr, salt: str, of: int) -> exp.Expr:
    return fill(_BUCKET, salt=sql.lit(salt), pid=pid, of=sql.lit(of))


def compile_bucket(cond: BucketCond, ctx: CompileContext) -> exp.Expr:
    lo, hi = cond.bucket.range
    return exp.Between(
        this=exp.Paren(this=bucket_expr(outer_pid(), cond.bucket.salt, cond.bucket.of)),
        low=sql.lit(lo),
        high=sql.lit(hi - 1),
    )


# --------------------------------------------------------------------------- tree
def compile_condition(cond: Any, ctx: CompileContext) -> exp.Expr:
    """A boolean expression over ``p.profile_id`` for any condition node."""
    from microseg.segments import compile_events as ev

    if isinstance(cond, All):
        return exp.and_(*(exp.Paren(this=compile_condition(c, ctx)) for c in cond.all))
    if isinstance(cond, Any_):
        return exp.or_(*(exp.Paren(this=compile_condition(c, ctx)) for c in cond.any))
    if isinstance(cond, Not):
        return exp.Not(this=exp.Paren(this=compile_condition(cond.not_, ctx)))
    if isinstance(cond, TraitCond):
        return compile_trait(cond, ctx)
    if isinstance(cond, EventCond):
        return ev.compile_event(cond, ctx)
    if isinstance(cond, SequenceCond):
        return ev.compile_sequence(cond, ctx)
    if isinstance(cond, RecencyCond):
        return ev.compile_recency(cond, ctx)
    if isinstance(cond, GeoCond):
        return compile_geo(cond, ctx)
    if isinstance(cond, PostalCond):
        return compile_postal(cond, ctx)
    if isinstance(cond, ConsentCond):
        return compile_consent(cond, ctx)
    if isinstance(cond, BucketCond):
        return compile_bucket(cond, ctx)
    if isinstance(cond, SegmentRef):
        if cond.segment in ctx.computed:  # computed earlier in this run at the same as_of
            stored = (
                exp.select(sql.col(PID, "m"))
                .from_(
                    exp.Table(
                        this=sql.ident("memberships"), alias=exp.TableAlias(this=sql.ident("m"))
                    )
                )
                .where(exp.EQ(this=sql.col("segment", "m"), expression=sql.lit(cond.segment)))
            )
            return member_of(stored)
        other = ctx.segments.get(cond.segment)
        if other is None:
            raise DefinitionError(f"unknown segment '{cond.segment}'")
        if ctx.depth > 32:
            raise DefinitionError(f"segment references nest too deep at '{cond.segment}' (cycle?)")
        sub = CompileContext(
            ctx.as_of,
            ctx.catalog,
            ctx.segments,
            {**ctx.stores, **other.stores},
            ctx.events_source,
            ctx.depth + 1,
            ctx.computed,
        )
        return exp.Paren(this=compile_condition(other.rule, sub))
    raise TypeError(f"not a condition: {cond!r}")


def compile_segment(
    seg: Segment,
    as_of: datetime,
    *,
    catalog: Catalog | None = None,
    segments: Mapping[str, Segment] | None = None,
    events_source: str | None = None,
    computed: frozenset[str] = frozenset(),
) -> exp.Select:
    """``SELECT p.profile_id FROM profiles p WHERE <not merged> AND <rule>`` as a sqlglot tree.

    ``segments`` resolves ``segment:`` references; ``events_source`` names a prepared table
    (profile_id + event columns) instead of joining events to identities in every leaf.
    """
    cat = catalog or Catalog(check_events=False)
    known = dict(segments or {})
    known.setdefault(seg.name, seg)
    ctx = CompileContext(
        as_of, cat, known, {**cat.stores, **seg.stores}, events_source, 0, computed
    )
    profiles = exp.Table(this=sql.ident("profiles"), alias=exp.TableAlias(this=sql.ident("p")))
    not_merged = exp.Is(this=sql.col("merged_into", "p"), expression=exp.Null())
    return (
        exp.select(outer_pid())
        .from_(profiles)
        .where(exp.and_(not_merged, exp.Paren(this=compile_condition(seg.rule, ctx))))
    )
