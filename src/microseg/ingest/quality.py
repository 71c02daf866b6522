"""Data-quality report over the event store (feature D4).

Sections, each a list of metrics with a threshold and a pass / warn / fail status:

* completeness — share of non-null values per core field and per declared property, among
  the events of the types that declare it;
* validity — quarantine rate (rows quarantined / rows read) overall, by reason code and per
  import batch;
* timeliness — lag ``received_at - ts`` (p50 / p95 / max) and the share of late events;
* duplicates — duplicate rows skipped at import (same event id) and exact-content duplicates
  among stored events (same type, time, ids and properties under different event ids);
* volume — daily event counts per type against a trailing window (spikes and drops beyond
  ``sigma`` standard deviations) and days without any session;
* outliers — profiles whose activity is more than ``sigma`` standard deviations from the
  mean, see :func:`outlier_profiles` (returns ids; ``save=True`` keeps them in the
  ``quality_outliers`` table so segments / models can exclude them).

All SQL is fixed text or sqlglot trees; property names come from the taxonomy and are
always quoted identifiers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from sqlglot import exp

from microseg.config.models import ProjectSettings
from microseg.store import Store, utcnow
from microseg.store import sql as q

Status = Literal["pass", "warn", "fail", "info"]
STATUS_ORDER: dict[str, int] = {"info": 0, "pass": 1, "warn": 2, "fail": 3}
CORE_FIELDS: tuple[str, ...] = ("user_id", "anonymous_id", "device_id", "email_token", "session_id")
CONTENT_EXCLUDED: frozenset[str] = frozenset(
    {"event_id", "received_at", "session_id", "source", "id_key"}
)
OUTLIER_METRICS: tuple[str, ...] = ("events", "sessions", "active_days")


@dataclass(frozen=True)
class Thresholds:
    """Limits of the quality metrics. Shares are fractions (0.05 = 5 %)."""

    completeness_warn: float = 0.95  # below -> warn
    completeness_fail: float = 0.80  # below -> fail
    quarantine_warn: float = 0.01  # quarantined / read above -> warn
    quarantine_fail: float = 0.05
    late_minutes: float = 60.0  # an event received later than this after it happened is late
    late_warn: float = 0.05  # share of late events above -> warn
    late_fail: float = 0.25
    backfill_days: float = 1.0  # a source whose median lag exceeds this is a back-fill
    duplicate_warn: float = 0.01  # duplicates / rows above -> warn
    duplicate_fail: float = 0.05
    sigma: float = 3.0  # anomaly and outlier distance in standard deviations
    window_days: int = 28  # trailing window of the volume check
    min_history_days: int = 7  # fewer days of history -> no verdict for that day
    anomaly_days_fail: int = 3  # this many anomalous days (or more) -> fail, 1+ -> warn
    outlier_warn: float = 0.01  # share of profiles flagged as outliers above -> warn
    outlier_fail: float = 0.05


@dataclass
class Metric:
    """One measured value with its threshold and verdict."""

    section: str
    name: str
    value: float | None
    status: Status
    threshold: str = ""
    detail: str = ""


@dataclass
class QualityReport:
    """The data-quality report; ``metrics`` has the verdicts, the frames the details."""

    as_of: datetime
    start: datetime | None
    events: int
    metrics: list[Metric] = field(default_factory=list)
    completeness: pd.DataFrame = field(default_factory=pd.DataFrame)
    reasons: pd.DataFrame = field(default_factory=pd.DataFrame)
    batches: pd.DataFrame = field(default_factory=pd.DataFrame)
    anomalies: pd.DataFrame = field(default_factory=pd.DataFrame)
    outliers: pd.DataFrame = field(default_factory=pd.DataFrame)
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def status(self) -> Status:
        """The worst verdict of all metrics."""
        worst: Status = "pass"
        for m in self.metrics:
            if STATUS_ORDER[m.status] > STATUS_ORDER[worst]:
                worst = m.status
        return worst

    def metric(self, section: str, name: str) -> Metric:
        for m in self.metrics:
            if m.section == section and m.name == name:
                return m
        raise KeyError(f"no metric {section}/{name}")

    def section(self, name: str) -> list[Metric]:
        return [m for m in self.metrics if m.section == name]

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: section, name, value, status, threshold, detail."""
        cols = ["section", "name", "value", "status", "threshold", "detail"]
        return pd.DataFrame([asdict(m) for m in self.metrics], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: summary, metrics and the detail tables as lists of records."""

        def records(df: pd.DataFrame) -> list[dict[str, Any]]:
            out = df.astype(object).where(df.notna(), None).to_dict(orient="records")
            return [
                {
                    k: (v.isoformat() if isinstance(v, datetime | pd.Timestamp) else v)
                    for k, v in r.items()
                }
                for r in out
            ]

        return {
            "as_of": self.as_of.isoformat(),
            "start": self.start.isoformat() if self.start else None,
            "events": self.events,
            "status": self.status,
            "thresholds": asdict(self.thresholds),
            "metrics": [asdict(m) for m in self.metrics],
            "completeness": records(self.completeness),
            "reasons": records(self.reasons),
            "batches": records(self.batches),
            "anomalies": records(self.anomalies),
            "outliers": records(self.outliers),
        }


# ----------------------------------------------------------------------------- helpers
def _low_is_bad(value: float, warn: float, fail: float) -> Status:
    return "fail" if value < fail else "warn" if value < warn else "pass"


def _high_is_bad(value: float, warn: float, fail: float) -> Status:
    return "fail" if value > fail else "warn" if value > warn else "pass"


def _period(start: datetime | None, as_of: datetime) -> exp.Condition:
    """WHERE condition on events.ts for (start, as_of]."""
    cond: exp.Condition = exp.LTE(
        this=q.col("ts"), expression=exp.cast(q.lit(as_of.isoformat(sep=" ")), "TIMESTAMP")
    )
    if start is not None:
        cond = exp.and_(
            cond,
            exp.GT(
                this=q.col("ts"), expression=exp.cast(q.lit(start.isoformat(sep=" ")), "TIMESTAMP")
            ),
        )
    return cond


def _share(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


# ----------------------------------------------------------------------------- sections
def _completeness(
    store: Store, settings: ProjectSettings, where: exp.Condition, t: Thresholds
) -> tuple[pd.DataFrame, list[Metric]]:
    props = settings.taxonomy.property_columns()
    have = store.columns("events")
    fields = [f for f in (*CORE_FIELDS, *props) if f in have]
    select = exp.select(
        q.col("event_type"), exp.alias_(exp.Count(this=exp.Star()), "_n", quoted=True)
    )
    for f in fields:
        select = select.select(exp.alias_(exp.Count(this=q.col(f)), f, quoted=True))
    select = select.from_(q.table("events")).where(where).group_by(q.col("event_type"))
    by_type = store.df(select)
    rows: list[dict[str, Any]] = []
    metrics: list[Metric] = []
    total = int(by_type["_n"].sum()) if not by_type.empty else 0
    for f in CORE_FIELDS:
        if f not in by_type:
            continue
        n = int(by_type[f].sum())
        share = _share(n, total)
        rows.append(
            {
                "field": f,
                "event_type": "*",
                "events": total,
                "present": n,
                "share": share,
                "required": False,
            }
        )
        if f == "session_id":
            status = (
                _low_is_bad(share, t.completeness_warn, t.completeness_fail) if total else "info"
            )
            metrics.append(
                Metric(
                    "completeness",
                    "session_id",
                    share,
                    status,
                    f">= {t.completeness_warn:.0%} (fail < {t.completeness_fail:.0%})",
                    f"{n:,} of {total:,} events have a session",
                )
            )
        else:  # identity fields are alternatives: reported, not judged one by one
            metrics.append(
                Metric("completeness", f, share, "info", "", f"{n:,} of {total:,} events")
            )
    for event, spec in settings.taxonomy.events.items():
        sub = by_type[by_type["event_type"] == event]
        n_events = int(sub["_n"].sum()) if not sub.empty else 0
        for prop, pspec in spec.properties.items():
            if prop not in by_type:
                continue
            present = int(sub[prop].sum()) if not sub.empty else 0
            share = _share(present, n_events)
            rows.append(
                {
                    "field": prop,
                    "event_type": event,
                    "events": n_events,
                    "present": present,
                    "share": share,
                    "required": pspec.required,
                }
            )
            if n_events == 0:
                continue
            if present == 0 and not pspec.required:  # no source provides it: not collected
                metrics.append(
                    Metric(
                        "completeness",
                        f"{event}.{prop}",
                        0.0,
                        "info",
                        "",
                        f"not collected (0 of {n_events:,} {event} events)",
                    )
                )
                continue
            fail = t.completeness_fail if not pspec.required else 1.0 - 1e-12
            status = _low_is_bad(share, t.completeness_warn, fail)
            metrics.append(
                Metric(
                    "completeness",
                    f"{event}.{prop}",
                    share,
                    status,
                    f">= {t.completeness_warn:.0%}",
                    f"{present:,} of {n_events:,} {event} events",
                )
            )
    return pd.DataFrame(
        rows, columns=["field", "event_type", "events", "present", "share", "required"]
    ), metrics


def _validity(
    store: Store, as_of: datetime, t: Thresholds
) -> tuple[pd.DataFrame, pd.DataFrame, list[Metric]]:
    batches = store.df(
        "SELECT batch_id, source, started_at, rows_read, inserted, duplicates, quarantined,"
        " CASE WHEN rows_read > 0 THEN quarantined / rows_read ELSE 0 END AS invalid_share"
        " FROM import_batches WHERE kind = 'events' AND started_at <= ? ORDER BY started_at",
        [as_of],
    )
    reasons = store.df(
        "SELECT reason, count(*) AS n, count(*) FILTER (WHERE status = 'open') AS open"
        " FROM quarantine WHERE quarantined_at <= ? GROUP BY reason ORDER BY n DESC, reason",
        [as_of],
    )
    read = int(batches["rows_read"].sum()) if not batches.empty else 0
    bad = int(batches["quarantined"].sum()) if not batches.empty else 0
    rate = _share(bad, read)
    limit = f"<= {t.quarantine_warn:.1%} (fail > {t.quarantine_fail:.1%})"
    metrics = [
        Metric(
            "validity",
            "quarantine_rate",
            rate,
            _high_is_bad(rate, t.quarantine_warn, t.quarantine_fail) if read else "info",
            limit,
            f"{bad:,} of {read:,} rows read were quarantined",
        )
    ]
    for r in reasons.itertuples(index=False):
        share = _share(int(r.n), read)
        metrics.append(
            Metric(
                "validity",
                f"reason.{r.reason}",
                share,
                "info",
                "",
                f"{int(r.n):,} quarantined ({int(r.open):,} open)",
            )
        )
    if not batches.empty:
        batches["status"] = [
            _high_is_bad(float(s), t.quarantine_warn, t.quarantine_fail)
            for s in batches["invalid_share"]
        ]
        worst = batches.loc[batches["invalid_share"].idxmax()]
        metrics.append(
            Metric(
                "validity",
                "worst_batch",
                float(worst["invalid_share"]),
                cast(Status, str(worst["status"])),
                limit,
                f"batch {worst['batch_id']} ({worst['source']})",
            )
        )
    return reasons, batches, metrics


def _timeliness(store: Store, where: exp.Condition, t: Thresholds) -> list[Metric]:
    """Lag between event time and arrival, judged on live data only.

    A source (a file, a collector spool segment) whose median lag exceeds
    ``backfill_days`` is a back-fill of history: its events are counted but their lag is
    not judged (a 2011 file imported today is not "late")."""
    inner = parse_static_select(
        "SELECT source, epoch(received_at) - epoch(ts) AS lag FROM events"
    ).where(where)
    query = parse_static_select(
        """
        WITH e AS (SELECT * FROM _inner),
        s AS (SELECT source, median(lag) AS med FROM e GROUP BY source)
        SELECT count(*) FILTER (WHERE NOT s.med > ?),
               quantile_cont(e.lag, 0.5) FILTER (WHERE NOT s.med > ?),
               quantile_cont(e.lag, 0.95) FILTER (WHERE NOT s.med > ?),
               max(e.lag) FILTER (WHERE NOT s.med > ?),
               count(*) FILTER (WHERE NOT s.med > ? AND e.lag > ?),
               count(*) FILTER (WHERE s.med > ?),
               count(DISTINCT e.source) FILTER (WHERE s.med > ?)
        FROM e JOIN s ON s.source IS NOT DISTINCT FROM e.source
        """
    )
    cte = query.args["with_"] if "with_" in query.args else query.args["with"]
    cte.expressions[0].set("this", inner)
    backfill = t.backfill_days * 86400.0
    late_after = t.late_minutes * 60.0
    params = [backfill] * 5 + [late_after] + [backfill] * 2
    n, p50, p95, mx, n_late, n_back, back_sources = store.rows(query, params)[0]
    backfilled = Metric(
        "timeliness",
        "backfilled_share",
        _share(n_back or 0, (n or 0) + (n_back or 0)) if (n or n_back) else None,
        "info",
        f"sources with median lag > {t.backfill_days:g} d",
        f"{int(n_back or 0):,} events from {int(back_sources or 0):,} back-filled sources"
        " (history: their lag is not judged)",
    )
    if not n:
        detail = "no live events" if n_back else "no events"
        return [Metric("timeliness", "late_share", None, "info", "", detail), backfilled]
    share = _share(n_late, n)

    def minutes(seconds: float | None) -> float | None:
        return None if seconds is None else float(seconds) / 60.0

    what = "received_at - ts, live sources"
    return [
        Metric("timeliness", "lag_p50_minutes", minutes(p50), "info", "", what),
        Metric("timeliness", "lag_p95_minutes", minutes(p95), "info", "", what),
        Metric("timeliness", "lag_max_minutes", minutes(mx), "info", "", what),
        Metric(
            "timeliness",
            "late_share",
            share,
            _high_is_bad(share, t.late_warn, t.late_fail),
            f"<= {t.late_warn:.0%} later than {t.late_minutes:g} min (fail > {t.late_fail:.0%})",
            f"{int(n_late):,} of {int(n):,} live events arrived late",
        ),
        backfilled,
    ]


def parse_static_select(sql: str) -> exp.Select:
    """A fixed SELECT of this module (never user input) as a syntax tree."""
    parsed = q.parse_static(sql)
    assert isinstance(parsed, exp.Select)
    return parsed


def _duplicates(
    store: Store, as_of: datetime, where: exp.Condition, t: Thresholds, events: int
) -> list[Metric]:
    read, skipped = store.rows(
        "SELECT coalesce(sum(rows_read), 0), coalesce(sum(duplicates), 0) FROM import_batches"
        " WHERE kind = 'events' AND started_at <= ?",
        [as_of],
    )[0]
    id_share = _share(skipped, read)
    content = [c for c in store.columns("events") if c not in CONTENT_EXCLUDED]
    distinct = (
        exp.select(*(q.col(c) for c in content)).distinct().from_(q.table("events")).where(where)
    )
    n_distinct = int(
        store.scalar(exp.select(exp.Count(this=exp.Star())).from_(distinct.subquery("d"))) or 0
    )
    exact = events - n_distinct
    exact_share = _share(exact, events)
    limit = f"<= {t.duplicate_warn:.0%} (fail > {t.duplicate_fail:.0%})"
    return [
        Metric(
            "duplicates",
            "skipped_at_import",
            id_share,
            _high_is_bad(id_share, t.duplicate_warn, t.duplicate_fail) if read else "info",
            limit,
            f"{int(skipped):,} of {int(read):,} rows read repeated a stored event id",
        ),
        Metric(
            "duplicates",
            "exact_content",
            exact_share,
            _high_is_bad(exact_share, t.duplicate_warn, t.duplicate_fail) if events else "info",
            limit,
            f"{exact:,} stored events repeat another's type, time, ids and properties",
        ),
    ]


def volume_anomalies(
    daily: pd.DataFrame, sigma: float = 3.0, window: int = 28, min_history: int = 7
) -> pd.DataFrame:
    """Days whose count is beyond ``sigma`` standard deviations of the trailing window.

    ``daily`` has columns day, series, n (missing days are filled with 0 between the first
    and last day of each series). The window holds the previous ``window`` days that were not
    flagged themselves, so one spike does not hide the drop after it. Returns day, series, n,
    mean, std, z, kind (spike | drop)."""
    out = []
    for series, g in daily.groupby("series", sort=True):
        s = g.groupby("day")["n"].sum().astype(float).sort_index()
        s = s.reindex(pd.date_range(s.index.min(), s.index.max(), freq="D"), fill_value=0.0)
        history: list[float] = []
        for day, n in s.items():
            if len(history) >= min_history:
                recent = np.array(history[-window:])
                m, sd = float(recent.mean()), float(recent.std())
                z = (n - m) / sd if sd > 0 else (0.0 if n == m else math.copysign(math.inf, n - m))
                if abs(z) > sigma:
                    out.append(
                        {
                            "day": day,
                            "series": series,
                            "n": int(n),
                            "mean": m,
                            "std": sd,
                            "z": float(z),
                            "kind": "spike" if z > 0 else "drop",
                        }
                    )
                    continue
            history.append(float(n))
    return pd.DataFrame(out, columns=["day", "series", "n", "mean", "std", "z", "kind"])


def _volume(store: Store, where: exp.Condition, t: Thresholds) -> tuple[pd.DataFrame, list[Metric]]:
    day = exp.alias_(
        exp.cast(q.func("date_trunc", q.lit("day"), q.col("ts")), "DATE"), "day", quoted=True
    )
    by_type = store.df(
        exp.select(
            day,
            exp.alias_(q.col("event_type"), "series", quoted=True),
            exp.alias_(exp.Count(this=exp.Star()), "n", quoted=True),
        )
        .from_(q.table("events"))
        .where(where)
        .group_by(q.lit(1), q.lit(2))
    )
    sessions = store.df(
        exp.select(
            day, exp.alias_(exp.Count(this=q.col("session_id"), distinct=True), "n", quoted=True)
        )
        .from_(q.table("events"))
        .where(where)
        .group_by(q.lit(1))
    )
    if by_type.empty:
        return pd.DataFrame(columns=["day", "series", "n", "mean", "std", "z", "kind"]), [
            Metric("volume", "anomalous_days", None, "info", "", "no events")
        ]
    sessions["series"] = "sessions"
    daily = pd.concat([by_type, sessions[["day", "series", "n"]]], ignore_index=True)
    daily["day"] = pd.to_datetime(daily["day"])
    anomalies = volume_anomalies(daily, t.sigma, t.window_days, t.min_history_days)
    all_days = pd.date_range(daily["day"].min(), daily["day"].max(), freq="D")
    with_sessions = set(pd.to_datetime(sessions.loc[sessions["n"] > 0, "day"]))
    zero = [d for d in all_days if d not in with_sessions]
    n_days = anomalies["day"].nunique()
    status: Status = "fail" if n_days >= t.anomaly_days_fail else "warn" if n_days else "pass"
    spikes = int((anomalies["kind"] == "spike").sum())
    drops = int((anomalies["kind"] == "drop").sum())
    metrics = [
        Metric(
            "volume",
            "anomalous_days",
            float(n_days),
            status,
            f"0 days beyond {t.sigma:g} sigma of a {t.window_days}-day window (fail >= {t.anomaly_days_fail})",
            f"{spikes} spikes, {drops} drops over {len(all_days)} days",
        ),
        Metric(
            "volume",
            "days_without_sessions",
            float(len(zero)),
            "warn" if zero else "pass",
            "0",
            ", ".join(d.date().isoformat() for d in zero[:10]) + (" ..." if len(zero) > 10 else ""),
        ),
    ]
    return anomalies, metrics


# ----------------------------------------------------------------------------- outliers
def profile_activity(
    store: Store, *, as_of: datetime | None = None, start: datetime | None = None
) -> pd.DataFrame:
    """Per unified profile: events, sessions and active days (events joined via identities)."""
    as_of = as_of or utcnow()
    where = _period(start, as_of)
    select = (
        exp.select(
            exp.alias_(q.col("profile_id", "i"), "profile_id", quoted=True),
            exp.alias_(exp.Count(this=exp.Star()), "events", quoted=True),
            exp.alias_(
                exp.Count(this=q.col("session_id", "e"), distinct=True), "sessions", quoted=True
            ),
            exp.alias_(
                exp.Count(this=exp.cast(q.col("ts", "e"), "DATE"), distinct=True),
                "active_days",
                quoted=True,
            ),
        )
        .from_(exp.Table(this=q.ident("events"), alias=exp.TableAlias(this=q.ident("e"))))
        .join(
            exp.Table(this=q.ident("identities"), alias=exp.TableAlias(this=q.ident("i"))),
            on=exp.EQ(this=q.col("id_key", "i"), expression=q.col("id_key", "e")),
        )
        .where(
            where.transform(
                lambda n: q.col("ts", "e") if isinstance(n, exp.Column) and n.name == "ts" else n
            )
        )
        .group_by(q.lit(1))
    )
    return store.df(select)


def flag_outliers(
    activity: pd.DataFrame, sigma: float = 3.0, metrics: tuple[str, ...] = OUTLIER_METRICS
) -> pd.DataFrame:
    """Rows of ``activity`` with a metric more than ``sigma`` std from its mean (z per metric)."""
    if activity.empty:
        return pd.DataFrame(columns=["profile_id", "metric", "value", "z"])
    parts = []
    for m in metrics:
        values = activity[m].astype(float)
        sd = float(values.std(ddof=0))
        if sd == 0 or np.isnan(sd):
            continue
        z = (values - float(values.mean())) / sd
        hit = z.abs() > sigma
        parts.append(
            pd.DataFrame(
                {
                    "profile_id": activity.loc[hit, "profile_id"],
                    "metric": m,
                    "value": values[hit],
                    "z": z[hit],
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["profile_id", "metric", "value", "z"])
    return pd.concat(parts, ignore_index=True).sort_values(
        ["metric", "z"], ascending=[True, False], ignore_index=True
    )


def outlier_profiles(
    store: Store,
    *,
    sigma: float = 3.0,
    metrics: tuple[str, ...] = OUTLIER_METRICS,
    as_of: datetime | None = None,
    start: datetime | None = None,
    save: bool = False,
) -> list[str]:
    """Ids of profiles whose activity (events / sessions / active days) is more than
    ``sigma`` standard deviations from the mean. With ``save=True`` the flags replace the
    content of the ``quality_outliers`` table (profile_id, metric, value, z, sigma, flagged_at),
    which segment, trait and model code can anti-join to exclude them."""
    flagged = flag_outliers(profile_activity(store, as_of=as_of, start=start), sigma, metrics)
    if save:
        now = utcnow()
        with store.transaction():
            store.execute("DELETE FROM quality_outliers")
            if not flagged.empty:
                frame = flagged.assign(sigma=float(sigma), flagged_at=now)[
                    ["profile_id", "metric", "value", "z", "sigma", "flagged_at"]
                ]
                with store.lock:
                    store.con.register("_ms_outliers", frame)
                    try:
                        store.execute("INSERT INTO quality_outliers SELECT * FROM _ms_outliers")
                    finally:
                        store.con.unregister("_ms_outliers")
    return sorted(set(flagged["profile_id"]))


# ----------------------------------------------------------------------------- report
def quality_report(
    store: Store,
    settings: ProjectSettings,
    *,
    as_of: datetime | None = None,
    days: int | None = None,
    thresholds: Thresholds | None = None,
) -> QualityReport:
    """Measure completeness, validity, timeliness, duplicates, volume and outliers.

    The period is the events with ts in (as_of - days, as_of]; ``as_of`` defaults to the
    latest event time (so a historical data set is judged on its own period) and ``days`` to
    everything. Validity and import duplicates cover every import batch and quarantine entry
    recorded so far (imports happen after the events they carry)."""
    t = thresholds or Thresholds()
    if as_of is None:
        latest = store.scalar("SELECT max(ts) FROM events")
        as_of = latest if latest is not None else utcnow()
    start = as_of - timedelta(days=days) if days else None
    where = _period(start, as_of)
    events = int(
        store.scalar(exp.select(exp.Count(this=exp.Star())).from_(q.table("events")).where(where))
        or 0
    )
    report = QualityReport(as_of=as_of, start=start, events=events, thresholds=t)
    completeness, metrics = _completeness(store, settings, where, t)
    report.completeness = completeness
    report.metrics.extend(metrics)
    reasons, batches, metrics = _validity(store, utcnow(), t)
    report.reasons, report.batches = reasons, batches
    report.metrics.extend(metrics)
    report.metrics.extend(_timeliness(store, where, t))
    report.metrics.extend(_duplicates(store, utcnow(), where, t, events))
    anomalies, metrics = _volume(store, where, t)
    report.anomalies = anomalies
    report.metrics.extend(metrics)
    activity = profile_activity(store, as_of=as_of, start=start)
    flagged = flag_outliers(activity, t.sigma)
    report.outliers = flagged
    n_out = flagged["profile_id"].nunique() if not flagged.empty else 0
    share = _share(n_out, len(activity))
    report.metrics.append(
        Metric(
            "outliers",
            "outlier_profiles",
            share,
            _high_is_bad(share, t.outlier_warn, t.outlier_fail) if len(activity) else "info",
            f"<= {t.outlier_warn:.0%} of profiles beyond {t.sigma:g} sigma",
            f"{n_out:,} of {len(activity):,} profiles (exclude with outlier_profiles(save=True))",
        )
    )
    return report
