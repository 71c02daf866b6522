"""Matplotlib figures for experiment results (Agg backend, no display needed)."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from microseg.experiments.analysis import ExperimentResult


def plot_lift(result: ExperimentResult, relative: bool = True) -> Figure:
    """Interval plot: one row per (variant, metric) with its lift and confidence interval."""
    rows = [r for r in result.results if not math.isnan(r.lift.abs_lift)]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.55 * max(len(rows), 1)))
    labels = []
    for y, r in enumerate(rows):
        if relative and not math.isnan(r.lift.rel_lift):
            est, (lo, hi), scale = r.lift.rel_lift, r.lift.rel_ci, 100.0
        else:
            est, (lo, hi), scale = r.lift.abs_lift, r.lift.abs_ci, 1.0
        color = "tab:green" if lo > 0 else "tab:red" if hi < 0 else "tab:gray"
        ax.errorbar(
            est * scale,
            y,
            xerr=[[(est - lo) * scale], [(hi - est) * scale]],
            fmt="o",
            color=color,
            capsize=4,
        )
        labels.append(f"{r.variant} · {r.metric}")
    ax.axvline(0, color="black", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)), labels)
    ax.invert_yaxis()
    conf = f"{1 - result.alpha:.0%}"
    ax.set_xlabel(("relative lift (%)" if relative else "absolute lift") + f", {conf} CI")
    ax.set_title(f"Lift vs control '{result.control}'")
    fig.tight_layout()
    return fig


def plot_qini(curve: pd.DataFrame, label: str = "model") -> Figure:
    """Qini curve (incremental responders vs share targeted) against random targeting."""
    need = {"fraction", "qini", "random"}
    if not need <= set(curve.columns):
        raise ValueError(f"qini curve needs columns {sorted(need)}, got {list(curve.columns)}")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve["fraction"], curve["qini"], label=label)
    ax.plot(curve["fraction"], curve["random"], ls="--", color="gray", label="random")
    ax.set_xlabel("share of users targeted (by predicted uplift)")
    ax.set_ylabel("incremental responders")
    ax.set_title("Qini curve")
    ax.legend()
    fig.tight_layout()
    return fig
