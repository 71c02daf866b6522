"""Segment KPIs over time (E3), computed set-based in DuckDB.

:func:`segment_kpis` returns one row per ``(segment, period, metric)`` with the metric's
``value`` and ``users`` — the number of users the value is based on (its denominator), so
callers such as the campaign guards can ignore noisy small groups.

Membership per period comes from ``membership_history``: an event (or send) counts for a
segment when its profile was a member at that moment. Before a segment's first batch
computation nothing is recorded, so by default (``backfill=True``) the members of that first
computation are taken to have been members since the beginning. Segments that have no
history at all fall back to their current ``memberships``. The whole population is the
segment ``"(all)"`` (unresolved events count under their identity key there).

Metrics (``METRICS``): sessions give duration, depth (events per session), bounce (share of
one-event sessions) and repeat-visit frequency (sessions per user); purchases give
conversion rate (converting users / active users), revenue and revenue per active user;
``content_click`` / ``content_view`` give click-through; the ``sends`` ledger plus
``email_open`` / ``email_click`` events give email reach, open and click rates. Event names
are configurable (:class:`KpiEvents`); a metric whose event type is neither declared in the
taxonomy nor present in the data is NaN and explained in ``frame.attrs["notes"]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlglot import exp

from microseg.config.models import Taxonomy
from microseg.errors import ConfigError, NotFoundError, did_you_mean
from microseg.store import sql as q
from microseg.store.duckdb_store import Store, naive_utc, utcnow

ALL = "(all)"
COLUMNS = ["segment", "period", "metric", "value", "users"]
FREQS: dict[str, tuple[str, str]] = {
    # our freq code -> (DuckDB date_trunc part, pandas period alias)
    "D": ("day", "D"),
    "W": ("week", "W-SUN"),  # ISO weeks: Monday to Sunday, like DuckDB's date_trunc('week')
    "M": ("month", "M"),
    "Q": ("quarter", "Q"),
}

METRICS: dict[str, str] = {
    "active_users": "users with at least one event in the period",
    "sessions": "sessions started in the period",
    "avg_session_duration_s": "mean seconds between a session's first and last event",
    "session_depth": "mean events per session",
    "bounce_rate": "share of sessions with a single event",
    "repeat_visit_frequency": "sessions per user with a session",
    "conversion_rate": "users with a purchase / active users",
    "revenue": "revenue of purchases in the period (revenue per segment)",
    "revenue_per_user": "revenue / active users",
    "content_ctr": "content clicks / content views",
    "email_sends": "emails sent (sends ledger, status sent)",
    "email_open_rate": "recipients who opened an email in the period / recipients",
    "email_click_rate": "recipients who clicked an email in the period / recipients",
}
RATE_METRICS = frozenset(METRICS) - {"active_users", "sessions", "email_sends", "revenue"}

_FOREVER_FROM = datetime(1900, 1, 1)
_FOREVER_TO = datetime(9999, 12, 31)

# Which KpiEvents roles feed which metrics (for NaN + a note when a role is missing).
_ROLE_METRICS: dict[str, tuple[str, ...]] = {
    "purchase": ("conversion_rate", "revenue", "revenue_per_user"),
    "content_view": ("content_ctr",),
    "content_click": ("content_ctr",),
    "email_open": ("email_open_rate",),
    "email_click": ("email_click_rate",),
}
_ROLE_CANDIDATES: dict[str, tuple[str, ...]] = {
    "purchase": ("purchase", "order_completed", "checkout_completed", "transaction", "order"),
    "content_view": ("content_view", "content_impression", "impression"),
    "content_click": ("content_click", "click"),
    "email_open": ("email_open", "email_opened"),
    "email_click": ("email_click", "email_clicked"),
}


@dataclass(frozen=True)
class KpiEvents:
    """Event type names and columns the KPIs read (defaults follow the bundled taxonomy)."""

    purchase: str = "purchase"
    content_view: str = "content_view"
    content_click: str = "content_click"
    email_open: str = "email_open"
    email_click: str = "email_click"
    revenue_column: str = "revenue"
    price_column: str = "price"
    quantity_column: str = "quantity"
    email_channel: str = "email"

    @classmethod
    def from_taxonomy(cls, taxonomy: Taxonomy, **overrides: str) -> KpiEvents:
        """Defaults mapped onto a project's taxonomy: a default name that the taxonomy's
        ``event_type`` master list renames becomes its canonical name, otherwise the first
        declared candidate (e.g. ``order_completed`` for purchases) is used."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            names = [f.name for f in fields(cls)]
            first = sorted(unknown)[0]
            raise ConfigError(f"unknown KPI event setting {first!r}{did_you_mean(first, names)}")
        synonyms = taxonomy.synonyms("event_type")
        chosen: dict[str, str] = {}
        for role, candidates in _ROLE_CANDIDATES.items():
            if role in overrides:
                continue
            default = str(getattr(cls, role))
            name = synonyms.get(default, default)
            if name not in taxonomy.events:
                name = next((c for c in candidates if c in taxonomy.events), name)
            chosen[role] = name
        return replace(cls(), **chosen, **overrides)


# --------------------------------------------------------------------------- fixed SQL
_MEMBERS_SQL = """
CREATE OR REPLACE TEMP TABLE _kpi_members AS
WITH h AS (
    SELECT segment, profile_id, change, changed_at, source,
           row_number() OVER w AS rn,
           lead(changed_at) OVER w AS next_at,
           min(changed_at) FILTER (WHERE source = 'batch') OVER (PARTITION BY segment) AS first_batch
    FROM membership_history
    WHERE list_contains($segments, segment) AND changed_at <= $as_of
    WINDOW w AS (PARTITION BY segment, profile_id ORDER BY changed_at, recorded_at)
)
SELECT segment, profile_id,
       CASE WHEN $backfill AND rn = 1 AND changed_at = first_batch AND source = 'batch'
            THEN $forever_from ELSE changed_at END AS valid_from,
       coalesce(next_at, $forever_to) AS valid_to
FROM h WHERE change = 'entered'
UNION ALL
SELECT segment, profile_id, $forever_from, changed_at
FROM h WHERE change = 'exited' AND rn = 1 AND $backfill
UNION ALL
SELECT m.segment, m.profile_id, $forever_from, $forever_to
FROM memberships m
WHERE list_contains($segments, m.segment)
  AND m.segment NOT IN (SELECT DISTINCT segment FROM membership_history WHERE changed_at <= $as_of)
"""

# __revenue__ is replaced by a sqlglot expression over the configured columns.
_EVENTS_SQL = """
CREATE OR REPLACE TEMP TABLE _kpi_ev AS
SELECT coalesce(i.profile_id, e.id_key) AS profile_id, e.event_type, e.ts, e.session_id,
       CASE WHEN e.event_type = $purchase THEN __revenue__ END AS revenue
FROM events AS e LEFT JOIN identities AS i ON i.id_key = e.id_key
WHERE e.ts >= $start AND e.ts < $end
"""

_SEGMENT_EVENTS_SQL = """
CREATE OR REPLACE TEMP TABLE _kpi_sev AS
SELECT $all AS segment, ev.*, date_trunc($part, ev.ts) AS period
FROM _kpi_ev AS ev WHERE $with_all
UNION ALL
SELECT m.segment, ev.*, date_trunc($part, ev.ts) AS period
FROM _kpi_ev AS ev JOIN _kpi_members AS m
  ON m.profile_id = ev.profile_id AND ev.ts >= m.valid_from AND ev.ts < m.valid_to
"""

_ACTIVITY_SQL = """
SELECT segment, period,
       count(DISTINCT profile_id) AS active_users,
       count(DISTINCT profile_id) FILTER (WHERE event_type = $purchase) AS converters,
       sum(revenue) AS revenue,
       count(*) FILTER (WHERE event_type = $content_view) AS content_views,
       count(*) FILTER (WHERE event_type = $content_click) AS content_clicks,
       count(DISTINCT profile_id) FILTER (WHERE event_type = $content_view) AS content_viewers
FROM _kpi_sev GROUP BY segment, period
"""

_SESSIONS_SQL = """
WITH s AS (
    SELECT segment, profile_id, session_id, min(ts) AS started, max(ts) AS ended,
           count(*) AS depth
    FROM _kpi_sev WHERE session_id IS NOT NULL
    GROUP BY segment, profile_id, session_id
)
SELECT segment, date_trunc($part, started) AS period,
       count(*) AS sessions,
       count(DISTINCT profile_id) AS session_users,
       avg(epoch(ended) - epoch(started)) AS avg_session_duration_s,
       avg(depth) AS session_depth,
       avg(CASE WHEN depth = 1 THEN 1.0 ELSE 0.0 END) AS bounce_rate
FROM s GROUP BY segment, date_trunc($part, started)
"""

_EMAIL_SQL = """
WITH sent AS (
    SELECT coalesce(profile_id, recipient_token) AS profile_id, sent_at AS ts
    FROM sends
    WHERE channel = $email_channel AND status = 'sent' AND sent_at >= $start AND sent_at < $end
),
seg_sent AS (
    SELECT $all AS segment, profile_id, date_trunc($part, ts) AS period FROM sent WHERE $with_all
    UNION ALL
    SELECT m.segment, s.profile_id, date_trunc($part, s.ts) AS period
    FROM sent AS s JOIN _kpi_members AS m
      ON m.profile_id = s.profile_id AND s.ts >= m.valid_from AND s.ts < m.valid_to
),
recipients AS (
    SELECT segment, period, profile_id, count(*) AS n FROM seg_sent GROUP BY ALL
),
engaged AS (
    SELECT segment, period, profile_id,
           bool_or(event_type = $email_open) AS opened,
           bool_or(event_type = $email_click) AS clicked
    FROM _kpi_sev WHERE event_type IN ($email_open, $email_click)
    GROUP BY ALL
)
SELECT r.segment, r.period, sum(r.n) AS email_sends, count(*) AS recipients,
       count(*) FILTER (WHERE coalesce(g.opened, FALSE)) AS openers,
       count(*) FILTER (WHERE coalesce(g.clicked, FALSE)) AS clickers
FROM recipients AS r LEFT JOIN engaged AS g
  ON g.segment = r.segment AND g.period = r.period AND g.profile_id = r.profile_id
GROUP BY r.segment, r.period
"""

_DROP_TEMP = (
    "DROP TABLE IF EXISTS _kpi_members",
    "DROP TABLE IF EXISTS _kpi_ev",
    "DROP TABLE IF EXISTS _kpi_sev",
)


# --------------------------------------------------------------------------- public API
def segment_kpis(
    store: Store,
    *,
    segments: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    freq: str = "W",
    as_of: datetime | None = None,
    events: KpiEvents | None = None,
    taxonomy: Taxonomy | None = None,
    backfill: bool = True,
) -> pd.DataFrame:
    """KPIs per segment and period: columns ``segment, period, metric, value, users``.

    ``segments``: names to report (``"(all)"`` may be listed); default every known segment
    plus ``"(all)"``. ``start``/``end`` bound event time (end exclusive; default: the first
    event and just after the last event or send before ``as_of``); ``as_of`` (default now)
    hides events, sends and membership changes recorded later. ``freq`` is ``D``, ``W`` (ISO weeks), ``M`` or ``Q``; ``period`` is the
    period's first instant. Every (segment, period, metric) in range is present: counts
    without activity are 0, rates without a denominator NaN. Notes about metrics that could
    not be computed are in ``frame.attrs["notes"]``.
    """
    code = freq.upper()
    if code not in FREQS:
        raise ConfigError(f"unknown KPI frequency {freq!r}; use one of {', '.join(FREQS)}")
    part, pfreq = FREQS[code]
    cfg = events or (KpiEvents.from_taxonomy(taxonomy) if taxonomy else KpiEvents())
    as_of = naive_utc(as_of) if as_of is not None else utcnow()
    start = naive_utc(start) if start is not None else None
    end = naive_utc(end) if end is not None else None
    with store.lock:
        names, with_all = _segment_names(store, segments)
        if start is None:
            first = store.scalar("SELECT min(ts) FROM events WHERE ts < ?", [as_of])
            start = first if first is not None else as_of
        stop = min(end, as_of) if end is not None else _last_activity(store, as_of)
        periods = _periods(start, stop, pfreq)
        notes: list[str] = []
        missing = _missing_roles(store, cfg, taxonomy, notes)
        revenue = _revenue_expr(store, cfg, notes)
        params: dict[str, Any] = {
            "segments": names,
            "as_of": as_of,
            "backfill": backfill,
            "forever_from": _FOREVER_FROM,
            "forever_to": _FOREVER_TO,
        }
        try:
            store.execute(_MEMBERS_SQL, params)
            ev_params = {"purchase": cfg.purchase, "start": start, "end": stop}
            store.execute(_events_statement(revenue), ev_params)
            seg_params = {"all": ALL, "with_all": with_all, "part": part}
            store.execute(_SEGMENT_EVENTS_SQL, seg_params)
            activity = store.df(
                _ACTIVITY_SQL,
                {
                    "purchase": cfg.purchase,
                    "content_view": cfg.content_view,
                    "content_click": cfg.content_click,
                },
            )
            sessions = store.df(_SESSIONS_SQL, {"part": part})
            email = store.df(
                _EMAIL_SQL,
                {
                    "email_channel": cfg.email_channel,
                    "start": start,
                    "end": stop,
                    "all": ALL,
                    "with_all": with_all,
                    "part": part,
                    "email_open": cfg.email_open,
                    "email_click": cfg.email_click,
                },
            )
        finally:
            for stmt in _DROP_TEMP:
                store.execute(stmt)
    shown = ([ALL] if with_all else []) + names
    frame = _assemble(shown, periods, activity, sessions, email, missing | revenue_missing(revenue))
    frame.attrs["notes"] = notes
    frame.attrs["freq"] = code
    return frame


def revenue_missing(revenue: exp.Expr) -> set[str]:
    """Metrics that must be NaN because no revenue column exists."""
    return {"revenue", "revenue_per_user"} if isinstance(revenue, exp.Null) else set()


def kpi_series(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One metric as a wide table: index period, one column per segment."""
    if metric not in METRICS:
        raise NotFoundError(f"unknown KPI {metric!r}{did_you_mean(metric, list(METRICS))}")
    sub = frame[frame["metric"] == metric]
    return sub.pivot_table(index="period", columns="segment", values="value", dropna=False)


# --------------------------------------------------------------------------- internals
def _segment_names(store: Store, wanted: Sequence[str] | None) -> tuple[list[str], bool]:
    known = sorted(
        str(r[0])
        for r in store.rows(
            "SELECT name FROM segments UNION SELECT segment FROM memberships"
            " UNION SELECT segment FROM membership_history"
        )
    )
    if wanted is None:
        return known, True
    names: list[str] = []
    for name in dict.fromkeys(wanted):
        if name == ALL:
            continue
        if name not in known:
            raise NotFoundError(f"no segment {name!r}{did_you_mean(name, [*known, ALL])}")
        names.append(name)
    return names, ALL in wanted


def _last_activity(store: Store, as_of: datetime) -> datetime:
    """Just after the last event or send before ``as_of`` (so old data is not padded with
    empty periods up to today); ``as_of`` when there is nothing."""
    last = store.scalar(
        "SELECT greatest((SELECT max(ts) FROM events WHERE ts < $as_of),"
        " (SELECT max(sent_at) FROM sends WHERE sent_at < $as_of))",
        {"as_of": as_of},
    )
    if last is None:
        return as_of
    return min(as_of, pd.Timestamp(last).to_pydatetime() + timedelta(microseconds=1))


def _periods(start: datetime, stop: datetime, pfreq: str) -> pd.DatetimeIndex:
    if stop <= start:
        return pd.DatetimeIndex([])
    last = pd.Timestamp(stop) - pd.Timedelta(microseconds=1)
    rng = pd.period_range(pd.Timestamp(start), last, freq=pfreq)
    return pd.DatetimeIndex(rng.start_time)


def _missing_roles(
    store: Store, cfg: KpiEvents, taxonomy: Taxonomy | None, notes: list[str]
) -> set[str]:
    present = {str(r[0]) for r in store.rows("SELECT DISTINCT event_type FROM events")}
    declared = set(taxonomy.events) if taxonomy else set()
    absent: dict[tuple[str, ...], list[str]] = {}
    for role, metrics in _ROLE_METRICS.items():
        name = str(getattr(cfg, role))
        if name not in present and name not in declared:
            absent.setdefault(metrics, []).append(f"'{name}'")
    for metrics, names in absent.items():
        notes.append(
            f"no {' / '.join(names)} events in the data or taxonomy:"
            f" {', '.join(metrics)} not computed"
        )
    return {m for metrics in absent for m in metrics}


def _revenue_expr(store: Store, cfg: KpiEvents, notes: list[str]) -> exp.Expr:
    cols = store.columns("events")
    if cfg.revenue_column in cols:
        return q.try_cast(q.col(cfg.revenue_column, "e"), "number")
    if cfg.price_column in cols and cfg.quantity_column in cols:
        return exp.Mul(
            this=q.try_cast(q.col(cfg.price_column, "e"), "number"),
            expression=q.try_cast(q.col(cfg.quantity_column, "e"), "number"),
        )
    notes.append(
        f"events have no '{cfg.revenue_column}' column (nor '{cfg.price_column}' and"
        f" '{cfg.quantity_column}'): revenue metrics not computed"
    )
    return exp.Null()


def _events_statement(revenue: exp.Expr) -> exp.Expr:
    tree = q.parse_static(_EVENTS_SQL)
    return tree.transform(
        lambda node: (
            revenue.copy() if isinstance(node, exp.Column) and node.name == "__revenue__" else node
        )
    )


def _assemble(
    segments: Iterable[str],
    periods: pd.DatetimeIndex,
    activity: pd.DataFrame,
    sessions: pd.DataFrame,
    email: pd.DataFrame,
    nan_metrics: set[str],
) -> pd.DataFrame:
    grid = pd.MultiIndex.from_product([list(segments), periods], names=["segment", "period"])
    if len(grid) == 0:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS}).astype(
            {"period": "datetime64[us]", "value": float, "users": "int64"}
        )
    wide = pd.DataFrame(index=grid)
    for part in (activity, sessions, email):
        if len(part):
            part = part.assign(period=pd.to_datetime(part["period"]).astype("datetime64[us]"))
            wide = wide.join(part.set_index(["segment", "period"]), how="left")
    wide.index = wide.index.set_levels(wide.index.levels[1].astype("datetime64[us]"), level=1)
    need = [
        "active_users",
        "converters",
        "revenue",
        "content_views",
        "content_clicks",
        "content_viewers",
        "sessions",
        "session_users",
        "avg_session_duration_s",
        "session_depth",
        "bounce_rate",
        "email_sends",
        "recipients",
        "openers",
        "clickers",
    ]
    for c in need:
        if c not in wide:
            wide[c] = np.nan
    w = wide.astype(float)
    counts = ["active_users", "converters", "content_views", "content_clicks", "content_viewers"]
    counts += ["sessions", "session_users", "email_sends", "recipients", "openers", "clickers"]
    w[counts] = w[counts].fillna(0.0)
    w["revenue"] = w["revenue"].fillna(0.0)
    active, sess_users, recips = w["active_users"], w["session_users"], w["recipients"]
    values: dict[str, tuple[pd.Series, pd.Series]] = {
        "active_users": (active, active),
        "sessions": (w["sessions"], sess_users),
        "avg_session_duration_s": (w["avg_session_duration_s"], sess_users),
        "session_depth": (w["session_depth"], sess_users),
        "bounce_rate": (w["bounce_rate"], sess_users),
        "repeat_visit_frequency": (_ratio(w["sessions"], sess_users), sess_users),
        "conversion_rate": (_ratio(w["converters"], active), active),
        "revenue": (w["revenue"], active),
        "revenue_per_user": (_ratio(w["revenue"], active), active),
        "content_ctr": (_ratio(w["content_clicks"], w["content_views"]), w["content_viewers"]),
        "email_sends": (w["email_sends"], recips),
        "email_open_rate": (_ratio(w["openers"], recips), recips),
        "email_click_rate": (_ratio(w["clickers"], recips), recips),
    }
    parts = []
    for metric, (value, users) in values.items():
        v = value.copy()
        if metric in nan_metrics:
            v[:] = np.nan
        parts.append(
            pd.DataFrame(
                {"metric": metric, "value": v.to_numpy(float), "users": users.to_numpy()},
                index=w.index,
            )
        )
    long = pd.concat(parts).reset_index()
    long["users"] = long["users"].fillna(0).astype("int64")
    order = {m: i for i, m in enumerate(METRICS)}
    seg_order = {s: i for i, s in enumerate(dict.fromkeys(segments))}
    long = long.sort_values(
        ["segment", "metric", "period"],
        key=lambda s: (
            s.map(seg_order) if s.name == "segment" else s.map(order) if s.name == "metric" else s
        ),
        kind="stable",
    )
    return long[COLUMNS].reset_index(drop=True)


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    out = num / den.where(den > 0)
    return out.astype(float)
