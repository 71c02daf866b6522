"""Dashboard reads for experiments, attribution and segment KPIs (thin over the library)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlglot import exp

from microseg.api.dashboard.credit import credit_by_model
from microseg.api.dashboard.data import jsonable, records
from microseg.errors import MicrosegError, did_you_mean
from microseg.experiments.analysis import ArmStats, analyze_experiment
from microseg.experiments.store import arm_stats_from_events, load_saved
from microseg.measure.attribution import MODELS
from microseg.store import sql as q
from microseg.store.duckdb_store import utcnow
from microseg.workspace import Workspace

CHANNEL_COLUMNS = ("channel", "utm_source", "utm_medium", "referrer")
DEFAULT_CONVERSION = "purchase"
MAX_TOUCHPOINTS = 200_000
DEFAULT_KPI = "conversion_rate"
ALL_METRICS = "all"

# Touchpoints: every event with a channel; a touch "converts" when the profile's next event
# (by time) is the conversion event, whose value it carries. The channel and value columns
# are sentinel names replaced by quoted identifiers in the syntax tree.
_TOUCHPOINTS = """
WITH x AS (
  SELECT i.profile_id AS journey_id, e.ts AS ts, e.__channel__ AS channel,
         e.event_type = ? AS is_conv, e.__value__ AS value
  FROM events AS e JOIN identities AS i ON i.id_key = e.id_key
  WHERE e.ts >= ? AND e.ts <= ? AND (e.event_type = ? OR NOT e.__channel__ IS NULL)
), y AS (
  SELECT journey_id, ts, channel, is_conv,
         lead(is_conv) OVER (PARTITION BY journey_id ORDER BY ts, is_conv) AS next_conv,
         lead(value) OVER (PARTITION BY journey_id ORDER BY ts, is_conv) AS next_value
  FROM x
)
SELECT journey_id, ts, CAST(channel AS VARCHAR) AS channel,
       coalesce(next_conv, FALSE) AS converted,
       CASE WHEN next_conv THEN coalesce(next_value, 0) ELSE 0 END AS value
FROM y WHERE NOT is_conv ORDER BY journey_id, ts LIMIT ?
"""


# --------------------------------------------------------------------------- experiments
def experiments_list(ws: Workspace) -> list[dict[str, Any]]:
    """Every experiment with its status and assignment / exposure counts."""
    df = ws.store.df(
        "SELECT x.experiment_key, x.status, x.control, x.planned_per_arm, x.created_at,"
        " coalesce(a.n, 0) AS assigned, coalesce(e.n, 0) AS exposed"
        " FROM experiments x"
        " LEFT JOIN (SELECT experiment_key, count(*) AS n FROM experiment_assignments"
        "   GROUP BY 1) a ON a.experiment_key = x.experiment_key"
        " LEFT JOIN (SELECT experiment_key, count(DISTINCT profile_id) AS n"
        "   FROM experiment_exposures GROUP BY 1) e ON e.experiment_key = x.experiment_key"
        " ORDER BY x.created_at DESC, x.experiment_key"
    )
    return records(df)


def _revenue_column(ws: Workspace, revenue: str | None) -> str | None:
    columns = list(ws.store.columns("events"))
    if revenue is None:
        return "revenue" if "revenue" in columns else None
    if revenue not in columns:
        raise MicrosegError(f"events have no column {revenue!r}{did_you_mean(revenue, columns)}")
    return revenue


def experiment_arms(
    ws: Workspace, key: str, event: str = DEFAULT_CONVERSION, revenue: str | None = None
) -> list[ArmStats]:
    """Per-variant sufficient statistics of exposed profiles, control first."""
    spec = load_saved(ws.store, key)
    arms = arm_stats_from_events(ws.store, key, event, _revenue_column(ws, revenue))
    control = spec.control or (spec.variants[0].name if spec.variants else None)
    return sorted(arms, key=lambda a: (a.name != control, a.name))


def experiment_detail(
    ws: Workspace,
    key: str,
    event: str = DEFAULT_CONVERSION,
    revenue: str | None = None,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Arms, lifts with confidence intervals, chance to win, SRM and horizon of one test."""
    spec = load_saved(ws.store, key)
    arms = experiment_arms(ws, key, event, revenue)
    out: dict[str, Any] = {
        "key": key,
        "conversion_event": event,
        "revenue_column": _revenue_column(ws, revenue),
        "planned_per_arm": spec.planned_per_arm,
        "arms": [],
        "results": [],
        "srm": None,
        "horizon": None,
        "message": None,
    }
    if not arms:
        out["message"] = "no exposures recorded yet"
        return out
    shares = spec.to_experiment().expected_shares()
    names = [a.name for a in arms]
    use_shares = {n: shares[n] for n in names} if all(n in shares for n in names) else None
    result = analyze_experiment(
        arms,
        arms[0].name,
        expected_shares=use_shares,
        planned_per_arm=spec.planned_per_arm,
        alpha=alpha,
    )
    ctw = result.bayes["conversion"].chance_to_win
    out["control"] = result.control
    out["arms"] = [
        {
            "variant": a.name,
            "n": a.n,
            "conversions": round(a.conversion.sum),
            "rate": a.conversion.mean if a.n else None,
            "revenue_per_user": a.revenue.mean if a.revenue is not None and a.n else None,
            "chance_to_win": ctw[i] if i < len(ctw) else None,
        }
        for i, a in enumerate(arms)
    ]
    out["results"] = records(result.to_frame())
    out["confidence"] = 1 - alpha
    out["srm"] = jsonable(
        {
            "p_value": result.srm.p_value,
            "mismatch": result.srm.mismatch,
            "observed": result.srm.observed,
        }
    )
    if result.horizon is not None:
        out["horizon"] = jsonable(result.horizon.__dict__)
    return dict(jsonable(out))


# --------------------------------------------------------------------------- attribution
def channel_column(ws: Workspace, channel: str | None) -> str:
    """The events column naming the channel: the one given, else the first known one."""
    columns = list(ws.store.columns("events"))
    if channel is not None:
        if channel not in columns:
            raise MicrosegError(
                f"events have no column {channel!r}{did_you_mean(channel, columns)}"
            )
        return channel
    for name in CHANNEL_COLUMNS:
        if name in columns:
            return name
    raise MicrosegError(f"events have no channel column; declare one of {list(CHANNEL_COLUMNS)}")


def touchpoints_query(channel: str, value: str | None) -> exp.Expr:
    """The touchpoint SELECT with the channel / value columns as quoted identifiers."""
    tree = q.parse_static(_TOUCHPOINTS)

    def swap(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.name == "__channel__":
            return q.col(channel, "e")
        if isinstance(node, exp.Column) and node.name == "__value__":
            return q.col(value, "e") if value else exp.Literal.number(1)
        return node

    return tree.transform(swap)


def touchpoints(
    ws: Workspace,
    *,
    event: str = DEFAULT_CONVERSION,
    channel: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = MAX_TOUCHPOINTS,
) -> pd.DataFrame:
    """``journey_id, ts, channel, converted, value`` rows (one journey per profile)."""
    column = channel_column(ws, channel)
    value = _revenue_column(ws, None)
    end = end or utcnow()
    start = start or end - timedelta(days=90)
    return ws.store.df(touchpoints_query(column, value), [event, start, end, event, limit])


def attribution(
    ws: Workspace,
    *,
    event: str = DEFAULT_CONVERSION,
    channel: str | None = None,
    models: Sequence[str] = MODELS,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Channel credit (conversions, value, share) under each attribution model."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise MicrosegError(
            f"unknown attribution model {unknown[0]!r}{did_you_mean(unknown[0], MODELS)}"
        )
    tp = touchpoints(ws, event=event, channel=channel, start=start, end=end)
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    journeys = int(tp["journey_id"].nunique()) if len(tp) else 0
    converted = int(tp.groupby("journey_id")["converted"].any().sum()) if len(tp) else 0
    if converted:
        rules = [m for m in models if m != "markov"]
        groups = ([rules] if rules else []) + ([["markov"]] if "markov" in models else [])
        for group in groups:
            try:
                rows += records(credit_by_model(tp, group))
            except (MicrosegError, ValueError, np.linalg.LinAlgError) as exc:
                errors.update({m: str(exc) for m in group})
        order = {m: i for i, m in enumerate(models)}
        rows.sort(key=lambda r: order[r["model"]])
    return {
        "conversion_event": event,
        "channel_column": channel_column(ws, channel),
        "touchpoints": len(tp),
        "truncated": len(tp) >= MAX_TOUCHPOINTS,
        "journeys": journeys,
        "converted_journeys": converted,
        "models": list(models),
        "credit": rows,
        "errors": errors,
    }


# --------------------------------------------------------------------------- KPIs
def kpis(
    ws: Workspace,
    *,
    segments: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    freq: str = "W",
    metric: str | None = None,
    periods: int | None = None,
) -> dict[str, Any]:
    """Segment KPIs over time from ``microseg.measure.kpis.segment_kpis`` when installed.

    ``metric`` keeps one metric's rows (default conversion rate; ``"all"`` keeps every
    metric; ``metrics`` always lists them all); ``periods`` keeps the latest N periods. Without the KPI module the answer says so (``available: false``)."""
    try:
        module = importlib.import_module("microseg.measure.kpis")
        segment_kpis = module.segment_kpis
    except (ImportError, AttributeError) as exc:
        return {"available": False, "reason": f"segment KPIs are not available: {exc}", "rows": []}
    frame = segment_kpis(ws.store, segments=segments or None, start=start, end=end, freq=freq)
    metrics = sorted({str(m) for m in frame["metric"]}) if len(frame) else []
    if metric is None and metrics:
        metric = DEFAULT_KPI if DEFAULT_KPI in metrics else metrics[0]
    if metric is not None and metric != ALL_METRICS:
        if metric not in metrics:
            raise MicrosegError(f"no KPI {metric!r}{did_you_mean(metric, metrics)}")
        frame = frame[frame["metric"] == metric]
    if periods is not None and len(frame):
        keep = sorted(frame["period"].unique())[-periods:]
        frame = frame[frame["period"].isin(keep)]
    return {
        "available": True,
        "metric": metric,
        "rows": records(frame),
        "metrics": metrics,
        "notes": [str(n) for n in frame.attrs.get("notes", [])],
    }
