"""``microseg report``: a self-contained HTML report (inline PNGs) plus the PNG files."""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from microseg.errors import ConfigError
from microseg.experiments.plots import plot_lift
from microseg.measure.attribution import plot_attribution
from microseg.measure.guards import campaign_status
from microseg.measure.kpis import ALL, FREQS, METRICS, KpiEvents, segment_kpis
from microseg.report import data
from microseg.report.plots import (
    plot_kpi_grid,
    plot_overlap,
    plot_segment_sizes,
    plot_size_trend,
    png_bytes,
)
from microseg.segments.membership import overlap, sizes
from microseg.store.duckdb_store import utcnow

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from microseg.workspace import Workspace

REPORT_FILE = "report.html"
REPORT_KPIS = (
    "active_users",
    "conversion_rate",
    "revenue_per_user",
    "avg_session_duration_s",
    "session_depth",
    "bounce_rate",
    "repeat_visit_frequency",
    "content_ctr",
    "email_open_rate",
    "email_click_rate",
)


@dataclass
class Image:
    """A PNG written next to the report and inlined into it."""

    file: str
    title: str
    png: bytes

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One report section; ``empty`` says why there is nothing to show."""

    key: str
    title: str
    empty: str | None = None
    images: list[Image] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_report(
    workspace: Workspace,
    out_dir: str | Path,
    *,
    as_of: datetime | None = None,
    freq: str = "W",
    kpi_events: KpiEvents | None = None,
) -> Path:
    """Write ``report.html`` (self-contained) and its PNGs into ``out_dir``; returns the HTML
    path. Sections: segments, KPIs over time, experiments, attribution, campaigns."""
    code = freq.upper()
    if code not in FREQS:
        raise ConfigError(f"unknown report frequency {freq!r}; use one of {', '.join(FREQS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    as_of = as_of or utcnow()
    store = workspace.store
    cfg = kpi_events or KpiEvents.from_taxonomy(workspace.settings.taxonomy)
    sections = [
        _segments_section(workspace, code, as_of),
        _kpi_section(workspace, code, as_of, cfg),
        _experiments_section(workspace, cfg),
        _attribution_section(workspace, cfg, as_of),
        _campaigns_section(workspace),
    ]
    for section in sections:
        for image in section.images:
            (out / image.file).write_bytes(image.png)
    env = Environment(
        loader=PackageLoader("microseg.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    html = env.get_template("report.html").render(
        project=workspace.settings.name,
        as_of=as_of,
        generated=utcnow(),
        freq=code,
        counts=_counts(store),
        sections=sections,
    )
    path = out / REPORT_FILE
    path.write_text(html, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- sections
def _segments_section(ws: Workspace, code: str, as_of: datetime) -> Section:
    sec = Section("segments", "Segments")
    sz = sizes(ws.store)
    if sz.empty:
        sec.empty = "No segments have been computed yet (run `microseg segments compute`)."
        return sec
    sec.images.append(_image("segments_sizes.png", "Current sizes", plot_segment_sizes(sz)))
    sec.tables.append(
        _table(
            "Segments",
            sz[["segment", "size", "status", "as_of", "computed_at"]],
        )
    )
    trend = data.size_trend(ws.store, FREQS[code][0], as_of)
    if trend.empty:
        sec.notes.append("No membership history yet, so no size trend.")
    else:
        sec.images.append(_image("segments_trend.png", "Size over time", plot_size_trend(trend)))
    ov = overlap(ws.store)
    if ov.empty:
        sec.notes.append("Overlap needs at least two segments with members.")
    else:
        sec.images.append(_image("segments_overlap.png", "Overlap (Jaccard)", plot_overlap(ov)))
    return sec


def _kpi_section(ws: Workspace, code: str, as_of: datetime, cfg: KpiEvents) -> Section:
    sec = Section("kpis", f"Segment KPIs over time (per {FREQS[code][0]})")
    frame = segment_kpis(
        ws.store, freq=code, as_of=as_of, events=cfg, taxonomy=ws.settings.taxonomy
    )
    sec.notes.extend(frame.attrs.get("notes", []))
    if frame.empty or not (frame[frame["metric"] == "active_users"]["value"] > 0).any():
        sec.empty = "No events yet, so no KPIs."
        return sec
    drawn = []
    for metric in REPORT_KPIS:
        values = frame.loc[frame["metric"] == metric, "value"]
        if not (values.isna().all() or (values.fillna(0) == 0).all()):
            drawn.append(metric)
    if drawn:
        fig = plot_kpi_grid(frame, drawn)
        sec.images.append(_image("kpis_over_time.png", "KPIs over time per segment", fig))
    last = frame["period"].max()
    latest = frame[frame["period"] == last].pivot_table(
        index="segment", columns="metric", values="value", dropna=False, sort=False
    )
    shown = [m for m in REPORT_KPIS if m in latest.columns and latest[m].notna().any()]
    latest = latest[shown].reset_index()
    latest["segment"] = pd.Categorical(
        latest["segment"], [ALL, *sorted(set(latest["segment"]) - {ALL})]
    )
    latest = latest.sort_values("segment").astype({"segment": str})
    sec.tables.append(_table(f"Latest period ({pd.Timestamp(last):%Y-%m-%d})", latest))
    meanings = pd.DataFrame({"metric": drawn, "meaning": [METRICS[m] for m in drawn]})
    sec.tables.append(_table("KPI definitions", meanings))
    return sec


def _experiments_section(ws: Workspace, cfg: KpiEvents) -> Section:
    sec = Section("experiments", "Experiments")
    reports = data.experiment_reports(ws.store, cfg.purchase)
    if not reports:
        sec.empty = "No experiments saved yet."
        return sec
    for rep in reports:
        if rep.result is None:
            sec.notes.append(f"{rep.key}: {rep.note}")
            continue
        res = rep.result
        has_lift = any(not math.isnan(r.lift.abs_lift) for r in res.results)
        if has_lift:
            fname = f"experiment_{_safe(rep.key)}.png"
            sec.images.append(_image(fname, f"{rep.key}: lift vs control", plot_lift(res)))
        df = res.to_frame()
        cols = ["variant", "metric", "n", "mean", "rel_lift", "rel_ci_low", "rel_ci_high"]
        cols += ["p_value", "chance_to_win", "verdict"]
        sec.tables.append(_table(f"{rep.key} (conversion: '{rep.conversion_event}')", df[cols]))
        if res.srm.mismatch:
            sec.notes.append(f"{rep.key}: sample ratio mismatch (p = {res.srm.p_value:.2g})")
    return sec


def _attribution_section(ws: Workspace, cfg: KpiEvents, as_of: datetime) -> Section:
    sec = Section("attribution", "Attribution")
    tp, used = data.touchpoints(ws.store, cfg.purchase, as_of)
    if tp.empty:
        sec.empty = (
            "No channel touchpoints: events need a channel, utm_source or utm_medium"
            " property, or messages must have been sent."
        )
        return sec
    converted = int(tp.groupby("journey_id")["converted"].any().sum())
    sec.notes.append(
        f"{len(tp):,} touchpoints from {used}; {tp['journey_id'].nunique():,} journeys,"
        f" {converted:,} converting ('{cfg.purchase}')."
    )
    if len(tp) >= data.MAX_TOUCHPOINTS:
        sec.notes.append(f"Touchpoints truncated at {data.MAX_TOUCHPOINTS:,}.")
    if not converted:
        sec.empty = "No journey reached a conversion, so there is nothing to attribute."
        return sec
    table, notes = data.attribution_table(tp)
    sec.notes.extend(notes)
    if table.empty:
        sec.empty = "No attribution model could be computed."
        return sec
    sec.images.append(_image("attribution.png", "Credit share by channel", plot_attribution(table)))
    sec.tables.append(_table("Channel credit", table))
    return sec


def _campaigns_section(ws: Workspace) -> Section:
    sec = Section("campaigns", "Campaigns and guard actions")
    status = campaign_status(ws.store)
    actions = ws.store.df(
        "SELECT campaign, rule, period, action, result, applied_at, applied_by"
        " FROM campaign_actions ORDER BY applied_at DESC LIMIT 50"
    )
    if status.empty and actions.empty:
        sec.empty = "No campaign state recorded (no guard has acted yet)."
        return sec
    if not status.empty:
        sec.tables.append(_table("Status", status))
    if not actions.empty:
        sec.tables.append(_table("Recent automated actions", actions))
    return sec


# --------------------------------------------------------------------------- helpers
def _image(file: str, title: str, fig: Figure) -> Image:
    return Image(file, title, png_bytes(fig))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "x"


def _fmt(value: Any) -> str:
    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _table(title: str, df: pd.DataFrame) -> Table:
    rows = [[_fmt(v) for v in rec] for rec in df.itertuples(index=False, name=None)]
    return Table(title, [str(c) for c in df.columns], rows)


def _counts(store: Any) -> dict[str, int]:
    out = {}
    for name, query in (
        ("events", "SELECT count(*) FROM events"),
        ("profiles", "SELECT count(*) FROM profiles"),
        ("segments", "SELECT count(*) FROM segments"),
        ("experiments", "SELECT count(*) FROM experiments"),
    ):
        out[name] = int(store.scalar(query) or 0)
    return out
