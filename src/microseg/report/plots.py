"""Report figures: segment sizes, size trend, overlap heat map, KPIs over time (PNG / HTML)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg", force=False)
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from microseg.errors import MicrosegError, NotFoundError, did_you_mean
from microseg.measure.kpis import METRICS

MAX_LINES = 8  # segments drawn per chart; the largest ones are kept


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes and close it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def plot_segment_sizes(sizes: pd.DataFrame) -> Figure:
    """Horizontal bars: current size of every segment (``segment, size``)."""
    df = sizes.sort_values("size")
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.35 * max(len(df), 1)))
    ax.barh(df["segment"].astype(str), df["size"].astype(float), color="tab:blue")
    for y, v in enumerate(df["size"]):
        ax.text(float(v), y, f" {int(v):,}", va="center", fontsize=8)
    ax.set_xlabel("profiles")
    ax.set_title("Segment sizes")
    fig.tight_layout()
    return fig


def plot_size_trend(trend: pd.DataFrame) -> Figure:
    """Members over time per segment (``segment, period, members``)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for seg in _top(trend, "segment", "members"):
        g = trend[trend["segment"] == seg].sort_values("period")
        ax.step(pd.to_datetime(g["period"]), g["members"], where="post", label=str(seg))
    ax.set_ylabel("members")
    ax.set_title("Segment size over time (membership history)")
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_overlap(overlap: pd.DataFrame) -> Figure:
    """Jaccard heat map from pairwise overlap rows (``segment_a, segment_b, jaccard``)."""
    names = sorted(set(overlap["segment_a"]) | set(overlap["segment_b"]))
    idx = {n: i for i, n in enumerate(names)}
    mat = np.eye(len(names))
    for r in overlap.itertuples(index=False):
        i, j = idx[r.segment_a], idx[r.segment_b]
        mat[i, j] = mat[j, i] = float(r.jaccard) if pd.notna(r.jaccard) else 0.0
    size = 2.5 + 0.5 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    if len(names) <= 12:
        for i in range(len(names)):
            for j in range(len(names)):
                color = "white" if mat[i, j] > 0.6 else "black"
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label="Jaccard overlap")
    ax.set_title("Segment overlap")
    fig.tight_layout()
    return fig


def plot_kpi(frame: pd.DataFrame, metric: str, segments: Sequence[str] | None = None) -> Figure:
    """One KPI over time, a line per segment, from a :func:`segment_kpis` frame."""
    sub = _kpi_rows(frame, metric, segments)
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for seg in _top(sub, "segment", "users"):
        g = sub[sub["segment"] == seg].sort_values("period")
        ax.plot(pd.to_datetime(g["period"]), g["value"], marker="o", ms=3, label=str(seg))
    ax.set_title(f"{metric} — {METRICS[metric]}", fontsize=10)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def plot_kpi_grid(
    frame: pd.DataFrame, metrics: Sequence[str], segments: Sequence[str] | None = None
) -> Figure:
    """Small multiples: one panel per KPI over time, a line per segment, one legend."""
    if not metrics:
        raise MicrosegError("no KPIs to plot")
    cols = 2 if len(metrics) > 1 else 1
    rows = -(-len(metrics) // cols)
    height = 2.4 * rows + 0.7
    fig, axes = plt.subplots(rows, cols, figsize=(11, height), squeeze=False, sharex=True)
    # fixed margins: tight_layout costs more than all the drawing on a busy machine
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.6 / height, top=1 - 0.55 / height)
    fig.subplots_adjust(hspace=0.35, wspace=0.18)
    keep = _top(frame[frame["metric"] == "active_users"], "segment", "users") or None
    handles: dict[str, Any] = {}
    locator = mdates.AutoDateLocator(maxticks=6)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = _kpi_rows(frame, metric, segments)
        for seg in keep or _top(sub, "segment", "users"):
            g = sub[sub["segment"] == seg].sort_values("period")
            if g.empty:
                continue
            (line,) = ax.plot(pd.to_datetime(g["period"]), g["value"], marker="o", ms=2)
            handles.setdefault(str(seg), line)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="upper center",
        ncol=min(len(handles), 6),
        fontsize=8,
        frameon=False,
    )
    return fig


def kpi_plotly_html(
    frame: pd.DataFrame,
    metric: str,
    segments: Sequence[str] | None = None,
    *,
    full_html: bool = True,
) -> str:
    """The same chart as interactive plotly HTML with plotly.js inlined (no CDN)."""
    import plotly.graph_objects as go

    sub = _kpi_rows(frame, metric, segments)
    fig = go.Figure()
    for seg in _top(sub, "segment", "users"):
        g = sub[sub["segment"] == seg].sort_values("period")
        fig.add_trace(
            go.Scatter(
                x=pd.to_datetime(g["period"]),
                y=g["value"],
                mode="lines+markers",
                name=str(seg),
                customdata=g["users"],
                hovertemplate="%{x}<br>%{y:.4g} (%{customdata} users)<extra>"
                + str(seg)
                + "</extra>",
            )
        )
    fig.update_layout(title=f"{metric} — {METRICS[metric]}", yaxis_title=metric)
    return str(fig.to_html(full_html=full_html, include_plotlyjs=True))


def _kpi_rows(frame: pd.DataFrame, metric: str, segments: Sequence[str] | None) -> pd.DataFrame:
    if metric not in METRICS:
        raise NotFoundError(f"unknown KPI {metric!r}{did_you_mean(metric, list(METRICS))}")
    sub = frame[frame["metric"] == metric]
    if segments is not None:
        missing = [s for s in segments if s not in set(sub["segment"])]
        if missing:
            known = sorted(set(sub["segment"]))
            raise NotFoundError(
                f"no KPI rows for segment {missing[0]!r}{did_you_mean(missing[0], known)}"
            )
        sub = sub[sub["segment"].isin(segments)]
    if sub.empty or sub["value"].isna().all():
        raise MicrosegError(f"no values of {metric!r} to plot")
    return sub


def _top(df: pd.DataFrame, key: str, weight: str) -> list[str]:
    """Up to MAX_LINES keys, heaviest first (keeps "(all)" when present)."""
    order = df.groupby(key)[weight].sum().sort_values(ascending=False).index.tolist()
    return [str(k) for k in order[:MAX_LINES]]
