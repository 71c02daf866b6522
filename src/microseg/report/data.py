"""Data for the report sections, read from the store (fixed SQL, bound parameters, sqlglot)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from sqlglot import exp

from microseg.errors import MicrosegError
from microseg.experiments.analysis import ExperimentResult, analyze_experiment
from microseg.experiments.assignment import ExperimentSpec
from microseg.experiments.store import arm_stats_from_events
from microseg.measure.attribution import compare_models
from microseg.store import sql as q
from microseg.store.duckdb_store import Store

CHANNEL_COLUMNS = ("channel", "utm_source", "utm_medium")
ATTRIBUTION_MODELS = ("first", "last", "linear", "markov")
MAX_TOUCHPOINTS = 200_000
MAX_JOURNEYS = 2_000  # attribution builds journeys in Python: a fixed hash sample beyond this

_TREND_SQL = """
WITH c AS (
    SELECT segment, date_trunc($part, changed_at) AS period,
           sum(CASE change WHEN 'entered' THEN 1 WHEN 'exited' THEN -1 ELSE 0 END) AS net
    FROM membership_history WHERE changed_at <= $as_of
    GROUP BY segment, date_trunc($part, changed_at)
)
SELECT segment, period,
       sum(net) OVER (PARTITION BY segment ORDER BY period ROWS UNBOUNDED PRECEDING) AS members
FROM c ORDER BY segment, period
"""

_SEND_TOUCHES = """
SELECT profile_id AS pid, sent_at AS ts, channel
FROM sends WHERE status = 'sent' AND profile_id IS NOT NULL AND sent_at < $as_of
"""

# __channel__ is replaced by the quoted channel column of events.
_EVENT_TOUCHES = """
SELECT coalesce(i.profile_id, e.id_key) AS pid, e.ts, CAST(e.__channel__ AS VARCHAR) AS channel
FROM events AS e LEFT JOIN identities AS i ON i.id_key = e.id_key
WHERE e.__channel__ IS NOT NULL AND e.ts < $as_of
"""

_JOURNEYS = """
WITH conv AS (
    SELECT coalesce(i.profile_id, e.id_key) AS pid, min(e.ts) AS first_conv
    FROM events AS e LEFT JOIN identities AS i ON i.id_key = e.id_key
    WHERE e.event_type = $event AND e.ts < $as_of
    GROUP BY coalesce(i.profile_id, e.id_key)
),
kept AS (
    SELECT t.pid, t.ts, t.channel, c.first_conv
    FROM __touches__ AS t LEFT JOIN conv AS c ON c.pid = t.pid
    WHERE c.first_conv IS NULL OR t.ts <= c.first_conv
)
SELECT pid AS journey_id, ts, channel,
       first_conv IS NOT NULL AND ts = max(ts) OVER (PARTITION BY pid) AS converted
FROM kept ORDER BY journey_id, ts LIMIT $limit
"""


def size_trend(store: Store, part: str, as_of: datetime) -> pd.DataFrame:
    """Members per segment at the end of each period, from membership history."""
    return store.df(_TREND_SQL, {"part": part, "as_of": as_of})


@dataclass(frozen=True)
class ExperimentReport:
    """One experiment's analysis (or why there is none)."""

    key: str
    conversion_event: str
    result: ExperimentResult | None
    note: str


def experiment_reports(store: Store, default_event: str) -> list[ExperimentReport]:
    """Analyse every saved experiment from its exposures and the conversion events."""
    present = {str(r[0]) for r in store.rows("SELECT DISTINCT event_type FROM events")}
    revenue = "revenue" if "revenue" in store.columns("events") else None
    out: list[ExperimentReport] = []
    for key, definition in store.rows(
        "SELECT experiment_key, definition FROM experiments ORDER BY experiment_key"
    ):
        spec = ExperimentSpec.model_validate(json.loads(definition))
        event = spec.metric if spec.metric in present else default_event
        try:
            arms = arm_stats_from_events(store, str(key), event, revenue)
            if not arms:
                out.append(ExperimentReport(str(key), event, None, "no exposures recorded yet"))
                continue
            result = analyze_experiment(arms, spec.control, planned_per_arm=spec.planned_per_arm)
        except MicrosegError as exc:
            out.append(ExperimentReport(str(key), event, None, str(exc)))
            continue
        out.append(ExperimentReport(str(key), event, result, ""))
    return out


def touchpoints(store: Store, event: str, as_of: datetime) -> tuple[pd.DataFrame, str]:
    """Attribution touchpoints (``journey_id, ts, channel, converted``; one journey per
    profile, cut at its first ``event``) from a channel column of events and the sends
    ledger; returns the frame and a description of the sources used."""
    cols = store.columns("events")
    channel = next((c for c in CHANNEL_COLUMNS if c in cols), None)
    touches: exp.Expr = q.parse_static(_SEND_TOUCHES)
    used = "sends ledger"
    if channel is not None:
        ev = q.parse_static(_EVENT_TOUCHES).transform(
            lambda n: (
                q.col(channel, "e") if isinstance(n, exp.Column) and n.name == "__channel__" else n
            )
        )
        assert isinstance(touches, exp.Query) and isinstance(ev, exp.Query)
        touches = exp.union(ev, touches, distinct=False)
        used = f"events.{channel} + sends ledger"
    tree = q.parse_static(_JOURNEYS).transform(
        lambda n: (
            exp.Subquery(this=touches.copy(), alias=exp.TableAlias(this=exp.to_identifier(n.alias)))
            if isinstance(n, exp.Table) and n.name == "__touches__"
            else n
        )
    )
    df = store.df(tree, {"event": event, "as_of": as_of, "limit": MAX_TOUCHPOINTS})
    return df, used


def sample_journeys(tp: pd.DataFrame, limit: int = MAX_JOURNEYS) -> pd.DataFrame:
    """At most ``limit`` whole journeys, chosen by a fixed hash of the journey id."""
    ids = pd.Series(tp["journey_id"].unique())
    if len(ids) <= limit:
        return tp
    keyed = pd.util.hash_pandas_object(ids, index=False)
    keep = set(ids[keyed.sort_values(kind="stable").index[:limit]])
    return tp[tp["journey_id"].isin(keep)]


def attribution_table(tp: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Channel credit of each model (on a journey sample when there are many); models that
    fail are reported, not raised."""
    frames = []
    notes = []
    total = tp["journey_id"].nunique()
    tp = sample_journeys(tp)
    if tp["journey_id"].nunique() < total:
        notes.append(f"Models fitted on a fixed sample of {MAX_JOURNEYS:,} of {total:,} journeys.")
    for model in ATTRIBUTION_MODELS:
        try:
            frames.append(compare_models(tp, [model]))
        except (MicrosegError, ValueError, ZeroDivisionError, ArithmeticError) as exc:
            notes.append(f"{model}: {exc}")
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table, notes
