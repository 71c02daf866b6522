"""Start the real-time evaluator from the store's history in set-based SQL, not profile by profile.

Two reads replace evaluating every segment for every profile in Python:

* ``batch_members``: every segment's membership at ``start`` from the same compiled SQL the
  batch path runs (the parity suite proves the two agree);
* ``history_events``: the events each profile still needs (per event type, only as far back as
  the longest window that reads it; all of them for recency / "never" conditions), restricted to
  the columns the segments read, grouped per profile into the evaluator's ``Ev`` lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from microseg.segments.ast import Segment, event_columns
from microseg.segments.catalog import Catalog
from microseg.segments.compiler import compile_segment, ts
from microseg.segments.evaluate import Ev
from microseg.segments.membership import (
    EVENTS_TEMP,
    _dependency_order,
    prepare_events,
)
from microseg.store import Store, sql


def batch_members(
    store: Store, catalog: Catalog, segments: Mapping[str, Segment], start: datetime
) -> dict[str, set[str]]:
    """segment -> member profile ids at ``start`` (nothing is written)."""
    out: dict[str, set[str]] = {}
    with store.lock:
        prepare_events(store, segments.values(), start)
        try:
            for name in _dependency_order(segments):
                query = compile_segment(
                    segments[name],
                    start,
                    catalog=catalog,
                    segments=segments,
                    events_source=EVENTS_TEMP,
                )
                out[name] = {str(r[0]) for r in store.rows(query)}
        finally:
            store.execute(f"DROP TABLE IF EXISTS {EVENTS_TEMP}")
    return out


def history_events(
    store: Store,
    segments: Mapping[str, Segment],
    horizon: Mapping[str, timedelta | None],
    start: datetime,
) -> dict[str, dict[str, list[Ev]]]:
    """profile id -> event type -> events (sorted by time) the evaluator must remember."""
    if not horizon:
        return {}
    _, wanted = event_columns(segments.values())
    have = set(store.columns("events"))
    columns = sorted((wanted | {"event_type", "ts", "session_id"}) & have)
    per_type = []
    for etype, span in sorted(horizon.items()):
        test: exp.Expr = exp.EQ(this=sql.col("event_type", "e"), expression=sql.lit(etype))
        if span is not None:
            test = exp.and_(test, exp.GT(this=sql.col("ts", "e"), expression=ts(start - span)))
        per_type.append(exp.Paren(this=test))
    query = (
        exp.select(sql.col("profile_id", "i"), *(sql.col(c, "e") for c in columns))
        .from_(exp.Table(this=sql.ident("events"), alias=exp.TableAlias(this=sql.ident("e"))))
        .join(
            exp.Table(this=sql.ident("identities"), alias=exp.TableAlias(this=sql.ident("i"))),
            on=exp.EQ(this=sql.col("id_key", "i"), expression=sql.col("id_key", "e")),
        )
        .where(
            exp.and_(
                exp.LTE(this=sql.col("ts", "e"), expression=ts(start)),
                exp.or_(*per_type),
            )
        )
        .order_by(sql.col("ts", "e"))
    )
    out: dict[str, dict[str, list[Ev]]] = {}
    for row in store.rows(query):
        pid = str(row[0])
        record: dict[str, Any] = dict(zip(columns, row[1:], strict=True))
        record["profile_id"] = pid
        out.setdefault(pid, {}).setdefault(str(record["event_type"]), []).append(
            Ev(record["ts"], record)
        )
    return out
