"""Trigger queries: who became eligible for a journey between two sweeps (set-based SQL).

One query per trigger, never one per profile; every query is a sqlglot tree (user-supplied
names are quoted identifiers, values are literals). Each returns rows
``(profile_id, occurrence, detail, at)`` where ``at`` is when the trigger happened (the
latest matching event, the membership change, the date offset), the base of later delays:

* ``event`` — matching events with ``since < ts <= now``;
* ``segment_entry`` / ``segment_exit`` — membership history changes in the window, still
  in (out of) the segment now;
* ``condition`` / ``trait`` — the profiles matching now (``matches_query``); the engine keeps
  last sweep's matches in ``journey_matches`` so only newly-matching profiles enrol
  (edge-triggered: "engagement dropped below 0.3" fires once per drop);
* ``date`` — ``date + offset days + at`` in ``(since, now]``; occurrence ``<date>|<offset>``
  (the latest offset reached when several passed while the engine was down).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from sqlglot import exp

from microseg.activate.journey_model import (
    ConditionTrigger,
    DateTrigger,
    EventTrigger,
    SegmentEntryTrigger,
    SegmentExitTrigger,
    TraitTrigger,
)
from microseg.segments.ast import PropertyFilter, Segment, TraitCond
from microseg.segments.catalog import Catalog
from microseg.segments.compiler import compile_segment, fill, ts, value_test
from microseg.store import sql

_EVENTS = sql.parse_static(
    "SELECT i.profile_id AS profile_id, CAST(NULL AS VARCHAR) AS occurrence,"
    " max(e.event_id) AS detail, max(e.ts) AS trigger_at FROM events AS e JOIN identities AS i ON i.id_key = e.id_key"
    " WHERE list_contains(:types, e.event_type) AND e.ts > :since AND e.ts <= :now"
    " GROUP BY i.profile_id"
)
_ENTRY = sql.parse_static(
    "SELECT h.profile_id AS profile_id, CAST(NULL AS VARCHAR) AS occurrence,"
    " :change AS detail, max(h.changed_at) AS trigger_at FROM membership_history AS h"
    " WHERE h.segment = :segment AND h.change = :change AND h.changed_at > :since"
    " AND h.changed_at <= :now AND h.profile_id IN"
    " (SELECT m.profile_id FROM memberships AS m WHERE m.segment = :segment)"
    " GROUP BY h.profile_id"
)
_EXIT = sql.parse_static(
    "SELECT h.profile_id AS profile_id, CAST(NULL AS VARCHAR) AS occurrence,"
    " :change AS detail, max(h.changed_at) AS trigger_at FROM membership_history AS h"
    " WHERE h.segment = :segment AND h.change = :change AND h.changed_at > :since"
    " AND h.changed_at <= :now AND h.profile_id NOT IN"
    " (SELECT m.profile_id FROM memberships AS m WHERE m.segment = :segment)"
    " GROUP BY h.profile_id"
)
_DATE = sql.parse_static(
    "SELECT profile_id, strftime(d, '%Y-%m-%d') || '|' || CAST(o AS VARCHAR) AS occurrence,"
    " CAST(o AS VARCHAR) AS detail, fire_at AS trigger_at FROM (SELECT s.profile_id AS profile_id, s.d AS d, u.o AS o,"
    " CAST(s.d AS TIMESTAMP) + to_days(u.o) + to_seconds(:at) AS fire_at"
    " FROM :source AS s CROSS JOIN UNNEST(:offsets) AS u(o) WHERE s.d IS NOT NULL) AS f"
    " WHERE fire_at > :since AND fire_at <= :now"
    " QUALIFY row_number() OVER (PARTITION BY profile_id ORDER BY fire_at DESC) = 1"
)
_ATTRIBUTE_DATES = sql.parse_static(
    "SELECT a.profile_id AS profile_id, TRY_CAST(a.value AS DATE) AS d"
    " FROM profile_attributes AS a JOIN profiles AS p ON p.profile_id = a.profile_id"
    " WHERE a.name = :name AND p.merged_into IS NULL"
)


def _list(values: list[str] | list[int]) -> exp.Expr:
    return exp.Array(expressions=[sql.lit(v) for v in values])


def property_filters(
    where: Mapping[str, PropertyFilter], columns: Collection[str], alias: str = "e"
) -> list[exp.Expr]:
    """One SQL test per ``where`` entry on the events alias (segment-language filters).

    A property no event has carried yet has no column: it is NULL for every event.
    """
    tests: list[exp.Expr] = []
    for name, flt in where.items():
        column: exp.Expr = sql.col(name, alias) if name in columns else exp.Null()
        tests.append(value_test(column, flt))
    return tests


def _with_filters(query: exp.Expr, tests: list[exp.Expr]) -> exp.Expr:
    if tests and isinstance(query, exp.Select):
        return query.where(exp.and_(*tests), copy=False)
    return query


def events_query(
    types: list[str],
    where: Mapping[str, PropertyFilter],
    since: datetime,
    now: datetime,
    columns: Collection[str],
) -> exp.Expr:
    """Profiles with a matching event in ``(since, now]`` (``columns``: of the events table)."""
    query = fill(_EVENTS, types=_list(types), since=ts(since), now=ts(now))
    return _with_filters(query, property_filters(where, columns))


def date_query(trigger: DateTrigger, since: datetime, now: datetime) -> exp.Expr:
    """Profiles whose ``date + offset`` (at the trigger's time of day) falls in ``(since, now]``."""
    if trigger.source == "attribute":
        source: exp.Expr = fill(_ATTRIBUTE_DATES, name=sql.lit(trigger.date))
    else:
        source = exp.select(
            exp.alias_(sql.col("profile_id", "t"), "profile_id"),
            exp.alias_(
                exp.TryCast(this=sql.col(trigger.date, "t"), to=exp.DataType.build("DATE")),
                "d",
            ),
        ).from_(exp.Table(this=sql.ident("traits"), alias=exp.TableAlias(this=sql.ident("t"))))
    at_seconds = trigger.at.hour * 3600 + trigger.at.minute * 60 + trigger.at.second
    return fill(
        _DATE,
        source=exp.Subquery(this=source),
        offsets=_list(trigger.offsets),
        at=sql.lit(at_seconds),
        since=ts(since),
        now=ts(now),
    )


def condition_segment(trigger: ConditionTrigger | TraitTrigger, name: str) -> Segment:
    """The trigger's condition as a one-rule segment (trait crossings become trait tests)."""
    if isinstance(trigger, ConditionTrigger):
        return Segment(name=name, rule=trigger.condition)
    if trigger.drops_below is not None:
        cond = TraitCond(trait=trigger.trait, lt=trigger.drops_below)
    else:
        cond = TraitCond(trait=trigger.trait, gt=trigger.rises_above)
    return Segment(name=name, rule=cond)


def matches_query(
    trigger: ConditionTrigger | TraitTrigger,
    journey: str,
    now: datetime,
    *,
    catalog: Catalog,
    segments: Mapping[str, Segment],
    computed: frozenset[str],
) -> exp.Select:
    """``SELECT profile_id`` of every profile the condition holds for at ``now``."""
    seg = condition_segment(trigger, f"journey_{journey}")
    return compile_segment(seg, now, catalog=catalog, segments=segments, computed=computed)


def candidates_query(
    trigger: EventTrigger | SegmentEntryTrigger | SegmentExitTrigger | DateTrigger,
    since: datetime,
    now: datetime,
    columns: Collection[str] = (),
) -> exp.Expr:
    """``(profile_id, occurrence, detail, at)`` newly eligible in ``(since, now]``."""
    if isinstance(trigger, EventTrigger):
        return events_query(trigger.types, trigger.where, since, now, columns)
    if isinstance(trigger, SegmentEntryTrigger):
        return fill(
            _ENTRY,
            segment=sql.lit(trigger.segment_entry),
            change=sql.lit("entered"),
            since=ts(since),
            now=ts(now),
        )
    if isinstance(trigger, SegmentExitTrigger):
        return fill(
            _EXIT,
            segment=sql.lit(trigger.segment_exit),
            change=sql.lit("exited"),
            since=ts(since),
            now=ts(now),
        )
    return date_query(trigger, since, now)
