"""Event-side leaves: window aggregates, per-session groups, sequences/drop-offs, recency.

Time semantics (shared with the Python evaluator): only events with ``ts <= as_of`` exist;
``last: d`` keeps ``ts > as_of - d``; ``since``/``until`` keep ``since <= ts < until``;
``then`` within T means a later event with ``a.ts < b.ts <= a.ts + T``; a drop-off is
settled once ``a.ts + T <= as_of``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlglot import exp

from microseg.segments.ast import (
    Compare,
    EventCond,
    RecencyCond,
    SequenceCond,
    Windowed,
    event_list,
    parse_duration,
)
from microseg.segments.compiler import (
    PID,
    CompileContext,
    compare,
    member_of,
    ts,
    value_test,
)
from microseg.store import sql


def event_source(ctx: CompileContext, alias: str) -> exp.Expr:
    """Events with their profile id: a prepared table, or events JOIN identities."""
    name = exp.TableAlias(this=sql.ident(alias))
    if ctx.events_source:
        return exp.Table(this=sql.ident(ctx.events_source), alias=name)
    joined = (
        exp.select(sql.col(PID, "i"), exp.Column(this=exp.Star(), table=sql.ident("e")))
        .from_(exp.Table(this=sql.ident("events"), alias=exp.TableAlias(this=sql.ident("e"))))
        .join(
            exp.Table(this=sql.ident("identities"), alias=exp.TableAlias(this=sql.ident("i"))),
            on=exp.EQ(this=sql.col("id_key", "i"), expression=sql.col("id_key", "e")),
        )
    )
    return exp.Subquery(this=joined, alias=name)


def event_filters(
    ctx: CompileContext,
    alias: str,
    types: list[str],
    where: Mapping[str, Any],
    window: Windowed | None,
) -> list[exp.Expr]:
    """Type, time window and property filters for one event alias."""
    tcol = sql.col("ts", alias)
    out: list[exp.Expr] = [
        exp.In(this=sql.col("event_type", alias), expressions=[sql.lit(t) for t in types]),
        exp.LTE(this=tcol, expression=ts(ctx.as_of)),
    ]
    if window is not None:
        lower, inclusive, _ = window.bounds(ctx.as_of)
        if lower is not None:
            op = exp.GTE if inclusive else exp.GT
            out.append(op(this=tcol, expression=ts(lower)))
        if window.until is not None:
            out.append(exp.LT(this=tcol, expression=ts(window.until)))
    for prop, flt in where.items():
        out.append(value_test(sql.col(prop, alias), flt))
    return out


def aggregate_expr(cond: EventCond, alias: str) -> exp.Expr:
    if cond.aggregate == "count":
        return exp.Count(this=exp.Star())
    column = sql.col(cond.of or "", alias)
    if cond.aggregate == "count_distinct":
        return exp.Count(this=exp.Distinct(expressions=[column]))
    if cond.aggregate == "sum":
        return exp.Coalesce(this=exp.Sum(this=column), expressions=[sql.lit(0)])
    return {"avg": exp.Avg, "min": exp.Min, "max": exp.Max}[cond.aggregate](this=column)


def compare_test(value: exp.Expr, cmp: Compare) -> exp.Expr:
    return compare(value, cmp.op, cmp.value)


def passes(value: float, cmp: Compare) -> bool:
    """Python twin of ``compare_test`` for a known number."""
    op, target = cmp.op, cmp.value
    if op == "between":
        return bool(target[0] <= value <= target[1])
    return bool(
        {
            "eq": value == target,
            "ne": value != target,
            "gt": value > target,
            "gte": value >= target,
            "lt": value < target,
            "lte": value <= target,
        }[op]
    )


def zero_passes(cond: EventCond) -> bool:
    """True when a profile without any matching event satisfies the comparison."""
    return cond.aggregate in ("count", "count_distinct", "sum") and passes(0, cond.compare)


def compile_event(cond: EventCond, ctx: CompileContext) -> exp.Expr:
    alias = "e"
    types = event_list(cond.event)
    filters = event_filters(ctx, alias, types, cond.where, cond)
    pid = sql.col(PID, alias)
    agg = aggregate_expr(cond, alias)
    if cond.grouped:
        keys: list[exp.Expr] = [pid]
        if cond.per_session:
            keys.append(sql.col("session_id", alias))
        keys.extend(sql.col(p, alias) for p in cond.same)
        filters.extend(exp.Not(this=exp.Is(this=k, expression=exp.Null())) for k in keys[1:])
        groups = (
            exp.select(pid)
            .from_(event_source(ctx, alias))
            .where(exp.and_(*filters))
            .group_by(*keys)
            .having(compare_test(agg, cond.compare))
        )
        return member_of(groups)
    base = exp.select(pid).from_(event_source(ctx, alias)).where(exp.and_(*filters)).group_by(pid)
    if zero_passes(cond):
        return member_of(base.having(exp.Not(this=compare_test(agg, cond.compare))), negate=True)
    return member_of(base.having(compare_test(agg, cond.compare)))


def interval(seconds: int) -> exp.Expr:
    return exp.Interval(this=exp.Literal.string(str(seconds)), unit=exp.var("SECOND"))


def compile_sequence(cond: SequenceCond, ctx: CompileContext) -> exp.Expr:
    within = int(parse_duration(cond.within).total_seconds())
    a_ts, b_ts = sql.col("ts", "a"), sql.col("ts", "b")
    deadline = exp.Add(this=a_ts, expression=interval(within))
    later = [
        exp.EQ(this=sql.col(PID, "b"), expression=sql.col(PID, "a")),
        *event_filters(ctx, "b", cond.second, cond.then_where, None),
        exp.GT(this=b_ts, expression=a_ts),
        exp.LTE(this=b_ts, expression=deadline),
    ]
    follow = exp.Exists(
        this=exp.select(exp.Literal.number(1)).from_(event_source(ctx, "b")).where(exp.and_(*later))
    )
    firsts = event_filters(ctx, "a", event_list(cond.first), cond.first_where, cond)
    if cond.followed:
        firsts.append(follow)
    else:
        firsts.append(exp.LTE(this=deadline.copy(), expression=ts(ctx.as_of)))
        firsts.append(exp.Not(this=follow))
    query = exp.select(sql.col(PID, "a")).from_(event_source(ctx, "a")).where(exp.and_(*firsts))
    return member_of(query)


def compile_recency(cond: RecencyCond, ctx: CompileContext) -> exp.Expr:
    alias = "e"
    filters = event_filters(ctx, alias, event_list(cond.recency), cond.where, None)
    pid = sql.col(PID, alias)
    latest = exp.Max(this=sql.col("ts", alias))
    cutoff = ts(ctx.as_of - cond.duration)
    base = exp.select(pid).from_(event_source(ctx, alias)).where(exp.and_(*filters)).group_by(pid)
    if cond.newer_than is not None:
        return member_of(base.having(exp.GT(this=latest, expression=cutoff)))
    if cond.or_never:
        return member_of(base.having(exp.GT(this=latest, expression=cutoff)), negate=True)
    return member_of(base.having(exp.LTE(this=latest, expression=cutoff)))
