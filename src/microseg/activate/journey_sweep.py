"""Trigger sweeps: one set-based query per journey, then enrolment in one transaction.

Enrolment, first-step timers, the journey log, trigger matches (edge-triggered conditions)
and the sweep watermark are written together, so a sweep that crashes is re-run over the
same window without enrolling anyone twice. Re-entry: a profile with an active enrolment
is never enrolled again; after its enrolment ended, ``never`` / ``always`` / ``cooldown``
decide. A date trigger's offsets share a group (the date): a later offset follows an
earlier one unless the goal was reached.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlglot import exp

from microseg.activate.journey_model import ConditionTrigger, Journey, TraitTrigger
from microseg.activate.triggers import candidates_query, matches_query
from microseg.segments.ast import Segment, parse_duration
from microseg.segments.catalog import Catalog
from microseg.store import Store, sql
from microseg.store.duckdb_store import utcnow

CompileEnv = Callable[[], tuple[Catalog, dict[str, Segment], frozenset[str]]]
TERMINAL = ("completed", "exited", "goal", "error")
_CAND, _NOW, _NEW, _ENROL = "_journey_candidates", "_journey_now", "_journey_new", "_journey_enrol"


def sweep_journey(store: Store, journey: Journey, now: datetime, compile_env: CompileEnv) -> int:
    """One trigger query, then enrolment + watermark in one transaction."""
    last = store.scalar(
        "SELECT last_sweep_at FROM journey_sweeps WHERE journey = ?", [journey.name]
    )
    if last is not None and last >= now:
        return 0
    since = last if last is not None else now - parse_duration(journey.lookback)
    trig = journey.trigger
    edge = isinstance(trig, (ConditionTrigger, TraitTrigger))
    with store.lock:
        try:
            if edge:
                assert isinstance(trig, (ConditionTrigger, TraitTrigger))
                catalog, segments, computed = compile_env()
                query = matches_query(
                    trig,
                    journey.name,
                    now,
                    catalog=catalog,
                    segments=segments,
                    computed=computed,
                )
                temp_table(store, _NOW, query)
                store.execute(
                    f"CREATE OR REPLACE TEMP TABLE {_NEW} AS SELECT profile_id FROM {_NOW}"
                    " ANTI JOIN (SELECT profile_id FROM journey_matches WHERE journey = ?)"
                    " USING (profile_id)",
                    [journey.name],
                )
                skip = last is None and journey.baseline
                store.execute(
                    f"CREATE OR REPLACE TEMP TABLE {_CAND} AS SELECT profile_id,"
                    f" CAST(NULL AS VARCHAR) AS occurrence, 'matched' AS detail, CAST(? AS TIMESTAMP)"
                    f" AS trigger_at FROM {_NEW} WHERE NOT ?",
                    [now, skip],
                )
            else:
                assert not isinstance(trig, (ConditionTrigger, TraitTrigger))
                temp_table(
                    store, _CAND, candidates_query(trig, since, now, store.columns("events"))
                )
            with store.transaction():
                enrolled = enrol(store, journey, now)
                if edge:
                    store.execute(
                        "DELETE FROM journey_matches AS m WHERE m.journey = ? AND NOT EXISTS"
                        f" (SELECT 1 FROM {_NOW} AS n WHERE n.profile_id = m.profile_id)",
                        [journey.name],
                    )
                    store.execute(
                        f"INSERT INTO journey_matches SELECT ?, profile_id, ? FROM {_NEW}",
                        [journey.name, now],
                    )
                store.execute(
                    "INSERT INTO journey_sweeps VALUES (?, ?, ?, ?) ON CONFLICT (journey) DO"
                    " UPDATE SET last_sweep_at = excluded.last_sweep_at,"
                    " enrolled = excluded.enrolled, updated_at = excluded.updated_at",
                    [journey.name, now, enrolled, utcnow()],
                )
        finally:
            for temp in (_CAND, _NOW, _NEW, _ENROL):
                store.execute(f"DROP TABLE IF EXISTS {temp}")
    return enrolled


def temp_table(store: Store, name: str, query: exp.Expr) -> None:
    """CREATE OR REPLACE TEMP TABLE name AS query (a sqlglot tree)."""
    create = sql.create_temp(name, query)
    store.execute(create)


def enrol(store: Store, journey: Journey, now: datetime) -> int:
    """Candidates -> enrolments (re-entry policy), state rows, first timers, log."""
    name = journey.name
    policy = journey.reentry
    cutoff = now - policy.cooldown_delta
    # same date group (renewal date): a new offset may follow unless the goal was reached
    store.execute(
        f"CREATE OR REPLACE TEMP TABLE {_ENROL} AS SELECT c.profile_id, c.occurrence,"
        " c.detail, least(c.trigger_at, ?) AS trigger_at, coalesce(s.enrolment, 0) + 1 AS enrolment FROM (SELECT DISTINCT ON"
        f" (profile_id) * FROM {_CAND}) AS c LEFT JOIN journey_state AS s"
        " ON s.journey = ? AND s.profile_id = c.profile_id"
        " WHERE s.profile_id IS NULL OR (list_contains(?, s.status) AND ("
        "  (c.occurrence IS NOT NULL AND s.occurrence IS NOT NULL"
        "   AND split_part(c.occurrence, '|', 1) = split_part(s.occurrence, '|', 1)"
        "   AND s.status <> 'goal' AND c.occurrence <> s.occurrence)"
        "  OR ((c.occurrence IS NULL OR s.occurrence IS NULL"
        "   OR split_part(c.occurrence, '|', 1) <> split_part(s.occurrence, '|', 1))"
        "   AND (? = 'always' OR (? = 'cooldown' AND s.updated_at <= ?)))))",
        [now, name, list(TERMINAL), policy.policy, policy.policy, cutoff],
    )
    count = int(store.scalar(f"SELECT count(*) FROM {_ENROL}") or 0)
    if not count:
        return 0
    first = journey.steps[0].id
    store.execute(
        f"DELETE FROM journey_state WHERE journey = ? AND profile_id IN (SELECT profile_id FROM {_ENROL})",
        [name],
    )
    store.execute(
        "INSERT INTO journey_state (profile_id, journey, step, status, entered_at, updated_at,"
        " data, enrolment, occurrence, visit) SELECT profile_id, ?, ?, 'active', trigger_at, ?,"
        f" NULL, enrolment, occurrence, 1 FROM {_ENROL}",
        [name, first, now],
    )
    store.execute(
        "INSERT INTO timers (timer_id, profile_id, journey, step, due_at, kind, enrolment)"
        " SELECT concat(?, ':', profile_id, ':', enrolment, ':', ?, ':1:step'), profile_id,"
        f" ?, ?, trigger_at, 'step', enrolment FROM {_ENROL} ON CONFLICT DO NOTHING",
        [name, first, name, first],
    )
    store.execute(
        "INSERT INTO journey_log SELECT ?, profile_id, enrolment, NULL, 'enrolled', ?,"
        f" coalesce(occurrence, detail) FROM {_ENROL}",
        [name, now],
    )
    return count
