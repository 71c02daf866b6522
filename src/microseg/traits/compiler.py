"""Compile a TraitSet into one sqlglot SELECT producing the wide traits table.

Shape of the query (CTE names are fixed; every user name is a quoted identifier and every
user value an AST literal):

- ``_pe``: events joined to their profile (identities.id_key), ``ts <= as_of``.
- ``_agg``: ONE ``GROUP BY profile_id`` pass with a FILTER clause per aggregate (count, sum,
  avg, min, max, distinct_count, first/last, recency, RFM parts, engagement, per-tag counts).
- ``_scored``: ``_agg`` plus population windows (RFM quintiles, engagement quantiles).
- ``_mode_<n>``: one small CTE per dominant / top / preferred_hour trait (group by profile
  and value, ROW_NUMBER to pick the winner; ties broken by the smallest value).
- ``_tags_<n>``: interest tags from the per-tag counts of ``_agg`` (no extra event scan).
- ``_attr_<n>``: a CRM attribute from profile_attributes.
- final SELECT: live profiles LEFT JOIN all of the above, one typed column per output.

Portability notes (for the Spark renderer): ARG_MIN/ARG_MAX (MAX_BY in Spark), EPOCH
(UNIX_TIMESTAMP), REGEXP_MATCHES (RLIKE) are rendered by sqlglot; ``ARRAY_AGG(x ORDER BY
y)`` loses its ORDER BY in Spark (COLLECT_LIST) — the Spark path must sort the tag list.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlglot import exp

from microseg.config.models import CORE_EVENT_COLUMNS
from microseg.store import sql as q
from microseg.traits.model import (
    AggregateTrait,
    AttributeTrait,
    Condition,
    CountTrait,
    DistinctCountTrait,
    EngagementTrait,
    Filtered,
    FirstLastTrait,
    InterestTagsTrait,
    ModeTrait,
    PreferredHourTrait,
    RecencyTrait,
    RfmTrait,
    TraitSet,
    parse_expression,
)

SECONDS_PER_DAY = 86400
LABEL_HIGH, LABEL_MID, LABEL_LOW = "Highly Engaged", "Moderately Engaged", "Lurker"
PE, AGG, BASE, RANKS, SCORED, PROFILES = "_pe", "_agg", "_base", "_ranks", "_scored", "_p"
SQL_TYPES = {**q.SQL_TYPES, "list": "VARCHAR[]"}


def ts_lit(value: datetime) -> exp.Expr:
    """A TIMESTAMP literal built by the AST (naive UTC)."""
    return exp.cast(q.lit(value.isoformat(sep=" ")), "TIMESTAMP")


def _and(parts: Iterable[exp.Expr | None]) -> exp.Expr | None:
    kept = [p for p in parts if p is not None]
    return exp.and_(*kept) if kept else None


def _is_null(e: exp.Expr) -> exp.Expr:
    return exp.Is(this=e, expression=exp.Null())


def _not_null(e: exp.Expr) -> exp.Expr:
    return exp.Not(this=_is_null(e))


def _ordered(e: exp.Expr, desc: bool = False) -> exp.Ordered:
    return exp.Ordered(this=e, desc=desc, nulls_first=False)


def _alias(e: exp.Expr, name: str) -> exp.Expr:
    return exp.alias_(e, name, quoted=True)


def _cast(e: exp.Expr, dtype: str) -> exp.Expr:
    return exp.Cast(this=e, to=exp.DataType.build(SQL_TYPES[dtype], dialect=q.DIALECT))


@dataclass
class _ValueGroup:
    """Two-level aggregation for distinct counts and modes of one value.

    Level 1 groups events by (profile_id, value) with one filtered count (and weight sum)
    per trait; level 2 groups by profile_id: distinct count = values with a count > 0,
    mode = ARG_MIN(value, (-strength, value)), i.e. the strongest value, ties -> smallest.
    All traits on the same property share one scan.
    """

    name: str
    value: exp.Expr
    level1: list[exp.Expr] = field(default_factory=list)
    level2: list[exp.Expr] = field(default_factory=list)

    def select(self, source: exp.Expr) -> exp.Select:
        inner = (
            exp.select(q.col("profile_id"), _alias(self.value.copy(), "_v"), *self.level1)
            .from_(source)
            .where(_not_null(self.value.copy()))
            .group_by(q.col("profile_id"), q.col("_v"))
        )
        return (
            exp.select(q.col("profile_id"), *self.level2)
            .from_(inner.subquery("g"))
            .group_by(q.col("profile_id"))
        )


@dataclass
class _Plan:
    """Accumulates the pieces of the query while traits are compiled."""

    as_of: datetime
    props: dict[str, str]
    aggs: list[exp.Expr] = field(default_factory=list)
    scored: list[exp.Expr] = field(default_factory=list)
    ctes: list[tuple[str, exp.Select]] = field(default_factory=list)
    joins: list[str] = field(default_factory=list)
    finals: list[exp.Expr] = field(default_factory=list)
    values: dict[str, _ValueGroup] = field(default_factory=dict)
    n: int = 0

    def value_group(self, key: str, value: exp.Expr) -> _ValueGroup:
        """The shared (profile_id, value) aggregation of one property (or the hour of ts)."""
        if key not in self.values:
            self.values[key] = _ValueGroup(self.name("_val"), value)
        return self.values[key]

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def agg(self, e: exp.Expr) -> str:
        alias = self.name("_a")
        self.aggs.append(_alias(e, alias))
        return alias

    # -- filters -------------------------------------------------------------------------
    def condition(self, f: Filtered) -> exp.Expr | None:
        """WHERE/FILTER predicate of a definition: event types, property tests, window."""
        parts: list[exp.Expr | None] = []
        if f.events is not None:
            parts.append(exp.In(this=q.col("event_type"), expressions=[q.lit(e) for e in f.events]))
        for prop, cond in f.where.items():
            parts.append(_condition(q.col(prop), cond))
        if f.window is not None:
            lower, upper, inclusive = f.window.bounds(self.as_of)
            if lower is not None:
                op = exp.GTE if inclusive else exp.GT
                parts.append(op(this=q.col("ts"), expression=ts_lit(lower)))
            if upper is not None:
                parts.append(exp.LT(this=q.col("ts"), expression=ts_lit(upper)))
        return _and(parts)

    def value(self, text: str) -> exp.Expr:
        numeric = {p: b for p, b in self.props.items() if b in ("integer", "number")}
        return parse_expression(text, numeric)

    def age_days(self) -> exp.Expr:
        """(as_of - ts) in fractional days."""
        as_of_epoch = q.lit((self.as_of - datetime(1970, 1, 1)).total_seconds())
        diff = exp.Sub(this=as_of_epoch, expression=exp.TimeToUnix(this=q.col("ts")))
        return exp.Div(this=exp.Paren(this=diff), expression=q.lit(SECONDS_PER_DAY))

    def days_since(self, last_ts: exp.Expr) -> exp.Expr:
        """Whole days between a timestamp column and as_of (floor)."""
        as_of_epoch = q.lit((self.as_of - datetime(1970, 1, 1)).total_seconds())
        diff = exp.Sub(this=as_of_epoch, expression=exp.TimeToUnix(this=last_ts))
        return _cast(
            exp.Floor(this=exp.Div(this=exp.Paren(this=diff), expression=q.lit(SECONDS_PER_DAY))),
            "integer",
        )


def _condition(column: exp.Expr, cond: Condition) -> exp.Expr:
    parts: list[exp.Expr] = []
    if cond.eq is not None:
        parts.append(exp.EQ(this=column, expression=q.lit(cond.eq)))
    if cond.ne is not None:
        parts.append(exp.NEQ(this=column, expression=q.lit(cond.ne)))
    if cond.in_ is not None:
        parts.append(exp.In(this=column, expressions=[q.lit(v) for v in cond.in_]))
    if cond.not_in is not None:
        parts.append(exp.Not(this=exp.In(this=column, expressions=[q.lit(v) for v in cond.not_in])))
    for op, node in (("gt", exp.GT), ("gte", exp.GTE), ("lt", exp.LT), ("lte", exp.LTE)):
        value = getattr(cond, op)
        if value is not None:
            parts.append(node(this=column, expression=q.lit(value)))
    if cond.like is not None:
        parts.append(exp.Like(this=column, expression=q.lit(cond.like)))
    if cond.matches is not None:
        parts.append(exp.RegexpLike(this=column, expression=q.lit(cond.matches)))
    if cond.exists is not None:
        parts.append(_not_null(column) if cond.exists else _is_null(column))
    result = _and(parts)
    assert result is not None
    return result


def _filtered(agg: exp.Expr, cond: exp.Expr | None) -> exp.Expr:
    return agg if cond is None else exp.Filter(this=agg, expression=exp.Where(this=cond))


def _count(cond: exp.Expr | None) -> exp.Expr:
    return _filtered(exp.Count(this=exp.Star(), big_int=True), cond)


def _zero(column: str, dtype: str) -> exp.Expr:
    return _cast(exp.Coalesce(this=q.col(column, SCORED), expressions=[q.lit(0)]), dtype)


# --------------------------------------------------------------------------- per kind
def _compile_trait(plan: _Plan, t: object) -> None:
    if isinstance(t, CountTrait):
        a = plan.agg(_count(plan.condition(t)))
        plan.finals.append(_alias(_zero(a, "integer"), t.name))
    elif isinstance(t, AggregateTrait):
        value = q.col(t.property) if t.property is not None else plan.value(t.value_text())
        cond = _and([plan.condition(t), _not_null(value.copy())])
        func = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max}[t.kind]
        out_type = "number"
        if t.property is not None and t.kind in ("min", "max"):
            out_type = plan.props.get(t.property, "number")
        else:
            value = _cast(value, "number")
        a = plan.agg(_filtered(func(this=value), cond))
        final = _zero(a, "number") if t.kind == "sum" else _cast(q.col(a, SCORED), out_type)
        plan.finals.append(_alias(final, t.name))
    elif isinstance(t, DistinctCountTrait):
        a = _distinct_count(plan, t.property, plan.condition(t))
        plan.finals.append(_alias(_zero(a, "integer"), t.name))
    elif isinstance(t, FirstLastTrait):
        cond = _and([plan.condition(t), _not_null(q.col(t.property))])
        # (ts, event_id) makes ties on the timestamp deterministic
        key = exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier("t"), expression=q.col("ts")),
                exp.PropertyEQ(this=exp.to_identifier("e"), expression=q.col("event_id")),
            ]
        )
        func = exp.ArgMin if t.kind == "first" else exp.ArgMax
        a = plan.agg(_filtered(func(this=q.col(t.property), expression=key), cond))
        plan.finals.append(_alias(q.col(a, SCORED), t.name))
    elif isinstance(t, RecencyTrait):
        a = plan.agg(_filtered(exp.Max(this=q.col("ts")), plan.condition(t)))
        plan.finals.append(_alias(plan.days_since(q.col(a, SCORED)), t.name))
    elif isinstance(t, RfmTrait):
        _compile_rfm(plan, t)
    elif isinstance(t, EngagementTrait):
        _compile_engagement(plan, t)
    elif isinstance(t, (ModeTrait, PreferredHourTrait)):
        _compile_mode(plan, t)
    elif isinstance(t, InterestTagsTrait):
        _compile_tags(plan, t)
    elif isinstance(t, AttributeTrait):
        _compile_attribute(plan, t)
    else:  # pragma: no cover - guarded by the model
        raise TypeError(f"cannot compile {t!r}")


def _score(column: exp.Expr, has: exp.Expr, desc: bool) -> exp.Expr:
    """Value-based quintile: ceil(5 * cume_dist) among profiles where ``has`` holds."""
    window = exp.Window(
        this=exp.CumeDist(),
        partition_by=[has],
        order=exp.Order(expressions=[_ordered(column, desc=desc)]),
    )
    score = _cast(exp.Ceil(this=exp.Mul(this=q.lit(5), expression=window)), "integer")
    return exp.Case(ifs=[exp.If(this=has.copy(), true=score)])


def _compile_rfm(plan: _Plan, t: RfmTrait) -> None:
    cond = plan.condition(t)
    last = plan.agg(_filtered(exp.Max(this=q.col("ts")), cond))
    freq = _distinct_count(plan, t.frequency_of, cond) if t.frequency_of else plan.agg(_count(cond))
    money = _cast(plan.value(t.monetary), "number")
    mon = plan.agg(_filtered(exp.Sum(this=money), cond))
    has = exp.GT(this=exp.Coalesce(this=q.col(freq), expressions=[q.lit(0)]), expression=q.lit(0))
    rec_days = plan.days_since(q.col(last))
    r, f, m = plan.name("_r"), plan.name("_f"), plan.name("_m")
    rd = plan.name("_rd")
    plan.scored += [
        _alias(rec_days, rd),
        _alias(_score(rec_days.copy(), has.copy(), desc=True), r),
        _alias(_score(q.col(freq), has.copy(), desc=False), f),
        _alias(
            _score(exp.Coalesce(this=q.col(mon), expressions=[q.lit(0)]), has.copy(), desc=False), m
        ),
    ]
    ifs = []
    for seg in t.segments:
        tests = [
            exp.Between(this=q.col(axis, SCORED), low=q.lit(lo), high=q.lit(hi))
            for axis, (lo, hi) in ((r, seg.r), (f, seg.f), (m, seg.m))
        ]
        ifs.append(exp.If(this=exp.and_(*tests), true=q.lit(seg.label)))
    label = exp.Case(ifs=ifs)
    has_final = exp.GT(
        this=exp.Coalesce(this=q.col(freq, SCORED), expressions=[q.lit(0)]), expression=q.lit(0)
    )
    plan.finals += [
        _alias(exp.Case(ifs=[exp.If(this=has_final, true=label)]), t.name),
        _alias(_cast(q.col(rd, SCORED), "integer"), f"{t.name}_recency_days"),
        _alias(_zero(freq, "integer"), f"{t.name}_frequency"),
        _alias(_zero(mon, "number"), f"{t.name}_monetary"),
        _alias(q.col(r, SCORED), f"{t.name}_r"),
        _alias(q.col(f, SCORED), f"{t.name}_f"),
        _alias(q.col(m, SCORED), f"{t.name}_m"),
    ]


def _compile_engagement(plan: _Plan, t: EngagementTrait) -> None:
    weight = exp.Case(
        this=q.col("event_type"),
        ifs=[exp.If(this=q.lit(e), true=q.lit(float(w))) for e, w in t.weights.items()],
    )
    decay = exp.Pow(
        this=q.lit(0.5),
        expression=exp.Div(this=plan.age_days(), expression=q.lit(float(t.half_life_days))),
    )
    in_weights = exp.In(this=q.col("event_type"), expressions=[q.lit(e) for e in t.weights])
    cond = _and([plan.condition(t), in_weights])
    a = plan.agg(_filtered(exp.Sum(this=exp.Mul(this=weight, expression=decay)), cond))
    score = exp.Coalesce(this=q.col(a), expressions=[q.lit(0.0)])
    labels = t.labels
    if labels.method == "thresholds":
        hi: exp.Expr = exp.GTE(this=score.copy(), expression=q.lit(labels.highly_engaged))
        mid: exp.Expr = exp.GTE(this=score.copy(), expression=q.lit(labels.moderately_engaged))
        hi = exp.and_(hi, exp.GT(this=score.copy(), expression=q.lit(0)))
        mid = exp.and_(mid, exp.GT(this=score.copy(), expression=q.lit(0)))
    else:
        positive = exp.GT(this=score.copy(), expression=q.lit(0))
        cd = exp.Window(
            this=exp.CumeDist(),
            partition_by=[positive],
            order=exp.Order(expressions=[_ordered(score.copy())]),
        )
        hi = exp.and_(positive.copy(), exp.GT(this=cd, expression=q.lit(labels.highly_engaged)))
        mid = exp.and_(
            positive.copy(), exp.GT(this=cd.copy(), expression=q.lit(labels.moderately_engaged))
        )
    label = exp.Case(
        ifs=[exp.If(this=hi, true=q.lit(LABEL_HIGH)), exp.If(this=mid, true=q.lit(LABEL_MID))],
        default=q.lit(LABEL_LOW),
    )
    lab = plan.name("_l")
    plan.scored.append(_alias(label, lab))
    plan.finals += [
        _alias(_zero(a, "number"), t.name),
        _alias(
            exp.Coalesce(this=q.col(lab, SCORED), expressions=[q.lit(LABEL_LOW)]), f"{t.name}_label"
        ),
    ]


def _distinct_count(plan: _Plan, prop: str, cond: exp.Expr | None) -> str:
    group = plan.value_group(prop, q.col(prop))
    c = plan.name("_c")
    group.level1.append(_alias(_count(cond), c))
    a = plan.name("_a")
    has = exp.GT(this=q.col(c), expression=q.lit(0))
    group.level2.append(_alias(_count(has), a))
    return a


def _compile_mode(plan: _Plan, t: ModeTrait | PreferredHourTrait) -> None:
    if isinstance(t, PreferredHourTrait):
        hour = _cast(exp.Extract(this=exp.var("HOUR"), expression=q.col("ts")), "integer")
        group = plan.value_group("ts:hour", hour)
        dtype = "integer"
    else:
        group = plan.value_group(t.property, q.col(t.property))
        dtype = plan.props.get(t.property, "string")
    cond = plan.condition(t)
    c = plan.name("_c")
    group.level1.append(_alias(_count(cond), c))
    strength: exp.Expr = q.col(c)
    if isinstance(t, ModeTrait) and t.weight is not None:
        w = plan.name("_w")
        weight = _cast(plan.value(t.weight), "number")
        group.level1.append(
            _alias(_filtered(exp.Sum(this=weight), cond.copy() if cond else None), w)
        )
        strength = exp.Coalesce(this=q.col(w), expressions=[q.lit(0.0)])
    has = exp.GT(this=q.col(c), expression=q.lit(0))
    a = plan.name("_a")
    if isinstance(t, PreferredHourTrait):
        # numeric key count * 24 + (23 - hour): largest count, ties -> earliest hour
        key: exp.Expr = exp.Add(
            this=exp.Mul(this=q.col(c), expression=q.lit(24)),
            expression=exp.Paren(this=exp.Sub(this=q.lit(23), expression=q.col("_v"))),
        )
        group.level2.append(_alias(_filtered(exp.ArgMax(this=q.col("_v"), expression=key), has), a))
    else:
        key = exp.Struct(
            expressions=[
                exp.PropertyEQ(this=exp.to_identifier("k"), expression=exp.Neg(this=strength)),
                exp.PropertyEQ(this=exp.to_identifier("v"), expression=q.col("_v")),
            ]
        )
        group.level2.append(_alias(_filtered(exp.ArgMin(this=q.col("_v"), expression=key), has), a))
    plan.finals.append(_alias(_cast(q.col(a, SCORED), dtype), t.name))


def _compile_tags(plan: _Plan, t: InterestTagsTrait) -> None:
    base = plan.condition(t)
    parts: list[exp.Select] = []
    for tag in t.tags():
        rules = [plan.condition(r) for r in t.rules if r.tag == tag]
        any_rule = exp.or_(*(r if r is not None else exp.true() for r in rules))
        a = plan.agg(_count(_and([base, exp.Paren(this=any_rule)])))
        parts.append(
            exp.select(q.col("profile_id"), _alias(q.lit(tag), "_tag"), _alias(q.col(a), "_n"))
            .from_(q.table(AGG))
            .where(exp.GTE(this=q.col(a), expression=q.lit(t.min_count)))
        )
    union: exp.Query = parts[0]
    for part in parts[1:]:
        union = exp.union(union, part, distinct=False)
    rank = exp.Window(
        this=exp.RowNumber(),
        partition_by=[q.col("profile_id")],
        order=exp.Order(expressions=[_ordered(q.col("_n"), desc=True), _ordered(q.col("_tag"))]),
    )
    ranked = exp.select(q.col("profile_id"), q.col("_tag"), _alias(rank, "_rn")).from_(
        union.subquery("u")
    )
    ordered = exp.Order(this=q.col("_tag"), expressions=[_ordered(q.col("_rn"))])
    name = plan.name("_tags")
    cte = (
        exp.select(q.col("profile_id"), _alias(exp.ArrayAgg(this=ordered), "_v"))
        .from_(ranked.subquery("r"))
        .where(exp.LTE(this=q.col("_rn"), expression=q.lit(t.cap)))
        .group_by(q.col("profile_id"))
    )
    plan.ctes.append((name, cte))
    plan.joins.append(name)
    empty = _cast(exp.Array(expressions=[]), "list")
    plan.finals.append(_alias(exp.Coalesce(this=q.col("_v", name), expressions=[empty]), t.name))


def _compile_attribute(plan: _Plan, t: AttributeTrait) -> None:
    if t.dtype == "number":
        value: exp.Expr = exp.Coalesce(
            this=q.col("value_num"), expressions=[q.try_cast(q.col("value"), "number")]
        )
    else:
        value = exp.Coalesce(this=q.col("value"), expressions=[_cast(q.col("value_num"), "string")])
    name = plan.name("_attr")
    cte = (
        exp.select(q.col("profile_id"), _alias(value, "_v"))
        .from_(q.table("profile_attributes"))
        .where(exp.EQ(this=q.col("name"), expression=q.lit(t.attribute)))
    )
    plan.ctes.append((name, cte))
    plan.joins.append(name)
    plan.finals.append(_alias(_cast(q.col("_v", name), t.dtype), t.name))


# --------------------------------------------------------------------------- assembly
def _reads_events(t: object) -> bool:
    return not isinstance(t, AttributeTrait)


def _global_lower(traitset: TraitSet, as_of: datetime) -> datetime | None:
    """Earliest event any trait can read, when every event-reading trait has a window."""
    lows: list[datetime] = []
    for t in traitset:
        if not _reads_events(t):
            continue
        windows = [t.window]
        if isinstance(t, InterestTagsTrait) and t.window is None:
            windows = [r.window for r in t.rules]
        for w in windows:
            if w is None:
                return None
            low = w.bounds(as_of)[0]
            if low is None:
                return None
            lows.append(low)
    return min(lows) if lows else None


def _event_columns(plan: _Plan, traitset: TraitSet) -> list[str]:
    """Event columns the compiled aggregates and mode CTEs read (the scan's projection)."""
    readable = {"ts", "event_type", "event_id", *CORE_EVENT_COLUMNS, *traitset.properties}
    trees: list[exp.Expr] = [*plan.aggs, *(cte for _, cte in plan.ctes)]
    for group in plan.values.values():
        trees += [group.value, *group.level1]
    found = {"ts"}
    for tree in trees:
        for column in tree.find_all(exp.Column):
            if not column.table and column.name in readable:
                found.add(column.name)
    found.discard("profile_id")
    return sorted(found)


def compile_traits(
    traitset: TraitSet,
    as_of: datetime,
    *,
    profile_ids: Iterable[str] | None = None,
) -> exp.Select:
    """One SELECT producing ``profile_id`` + one typed column per trait output, as of ``as_of``.

    ``profile_ids`` restricts the result to those profiles (the incremental path). When no
    trait depends on the population (RFM scores, quantile labels) the restriction is pushed
    down into the event scan; otherwise the whole population is scored and then filtered.
    """
    plan = _Plan(as_of=as_of, props=dict(traitset.properties))
    for t in traitset:
        _compile_trait(plan, t)
    ids = None if profile_ids is None else [q.lit(str(p)) for p in profile_ids]
    push_down = ids is not None and not traitset.population_relative()

    ctes: list[tuple[str, exp.Select]] = []
    if any(_reads_events(t) for t in traitset):
        where: list[exp.Expr] = [exp.LTE(this=q.col("ts", "e"), expression=ts_lit(as_of))]
        lower = _global_lower(traitset, as_of)
        if lower is not None:
            where.append(exp.GTE(this=q.col("ts", "e"), expression=ts_lit(lower)))
        if push_down and ids is not None:
            where.append(exp.In(this=q.col("profile_id", "i"), expressions=[i.copy() for i in ids]))
        needed = _event_columns(plan, traitset)
        pe = (
            exp.select(q.col("profile_id", "i"), *(q.col(c, "e") for c in needed))
            .from_(exp.alias_(q.table("events"), "e", quoted=True))
            .join(
                exp.alias_(q.table("identities"), "i", quoted=True),
                on=exp.EQ(this=q.col("id_key", "i"), expression=q.col("id_key", "e")),
            )
            .where(exp.and_(*where))
        )
        # The event scan is inlined in each consumer (no CTE): engines would otherwise
        # materialise the 10M-row join; each consumer reads only the columns it needs.
        agg = (
            exp.select(q.col("profile_id"))
            .from_(pe.subquery(exp.to_identifier(PE, quoted=True)))
            .group_by(q.col("profile_id"))
        )
        if plan.aggs:
            agg = agg.select(*plan.aggs)
        ctes.append((AGG, agg))
        scored = exp.select(q.col("profile_id", AGG), *(q.col(a.alias, AGG) for a in plan.aggs))
        scored = scored.from_(q.table(AGG))
        for group in plan.values.values():
            ctes.append((group.name, group.select(pe.subquery(exp.to_identifier(PE, quoted=True)))))
            scored = scored.select(*(q.col(a.alias, group.name) for a in group.level2))
            scored = scored.join(
                q.table(group.name),
                on=exp.EQ(
                    this=q.col("profile_id", group.name), expression=q.col("profile_id", AGG)
                ),
                join_type="LEFT",
            )
        if plan.scored:
            # Population windows run on a narrow projection (sorting wide rows is costly),
            # then join back to the wide per-profile rows.
            ctes.append((BASE, scored))
            used = sorted(
                {c.name for e in plan.scored for c in e.find_all(exp.Column)} - {"profile_id"}
            )
            narrow = exp.select(q.col("profile_id"), *(q.col(c) for c in used)).from_(q.table(BASE))
            ranks = exp.select(q.col("profile_id"), *plan.scored).from_(narrow.subquery("_n"))
            ctes.append((RANKS, ranks))
            scored = (
                exp.select(
                    exp.Column(this=exp.Star(), table=q.ident(BASE)),
                    *(q.col(e.alias, RANKS) for e in plan.scored),
                )
                .from_(q.table(BASE))
                .join(
                    q.table(RANKS),
                    join_type="LEFT",
                    on=exp.EQ(
                        this=q.col("profile_id", RANKS), expression=q.col("profile_id", BASE)
                    ),
                )
            )
        ctes.append((SCORED, scored))
        plan.joins.insert(0, SCORED)
    ctes.extend(plan.ctes)

    final = exp.select(q.col("profile_id", PROFILES), *plan.finals).from_(
        exp.alias_(q.table("profiles"), PROFILES, quoted=True)
    )
    for name in plan.joins:
        final = final.join(
            q.table(name),
            on=exp.EQ(this=q.col("profile_id", name), expression=q.col("profile_id", PROFILES)),
            join_type="LEFT",
        )
    conds: list[exp.Expr] = [_is_null(q.col("merged_into", PROFILES))]
    if ids is not None:
        conds.append(exp.In(this=q.col("profile_id", PROFILES), expressions=ids))
    final = final.where(exp.and_(*conds))
    for name, cte in ctes:
        final = final.with_(exp.to_identifier(name, quoted=True), as_=cte)
    return final


def render(traitset: TraitSet, as_of: datetime, dialect: str = q.DIALECT) -> str:
    """The compiled query as SQL text of a dialect (for review and golden tests)."""
    return compile_traits(traitset, as_of).sql(dialect=dialect, pretty=True)
