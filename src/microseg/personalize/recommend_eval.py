"""Offline evaluation of recommenders on a temporal split.

Train on events strictly before ``cutoff``; the truth of a profile is the set of items it bought
in ``[cutoff, cutoff + horizon)``. Two modes: ``new`` (items the profile had not bought before the
cutoff; recommenders exclude already-bought items) and ``all`` (repeats count; nothing
excluded). Only profiles with at least one purchase (or, optionally, any interaction) before
the cutoff are scored (warm start).
Metrics per k: hit rate, recall, precision, MAP and NDCG (binary relevance), with a bootstrap
confidence interval (profiles resampled) for recall@k and its paired difference to popularity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from microseg.console import Progress, SilentProgress, step
from microseg.errors import ConfigError
from microseg.personalize.recommend import make_recommender
from microseg.personalize.recommend_data import EventMapping, Interactions, load_interactions
from microseg.personalize.recommenders import Recommender
from microseg.store import Store

METRICS = ("hit_rate", "recall", "precision", "map", "ndcg")
MODES = ("new", "all")


@dataclass
class Split:
    """Train interactions (before ``cutoff``) and test purchases (profile_id, item, repeat)."""

    train: Interactions
    test: pd.DataFrame
    cutoff: datetime
    end: datetime | None

    def truth(self, mode: str) -> pd.DataFrame:
        """Test items of warm profiles: all of them (``all``) or not bought before (``new``)."""
        if mode not in MODES:
            raise ConfigError(f"unknown evaluation mode '{mode}' (new or all)")
        test = self.test if mode == "all" else self.test[~self.test["repeat"]]
        return test[["profile_id", "item"]].reset_index(drop=True)


def temporal_split(
    store: Store,
    cutoff: datetime,
    mapping: EventMapping | None = None,
    *,
    horizon: timedelta | None = None,
    warm: Literal["purchase", "any"] = "purchase",
) -> Split:
    """Split the store's events at ``cutoff`` (the train side never sees ``ts >= cutoff``).

    Test profiles are those with a purchase before the cutoff (``warm="purchase"``) or any
    interaction before it (``"any"``: clickstreams, where views and carts carry the signal).
    """
    mapping = mapping or EventMapping()
    train = load_interactions(store, cutoff, mapping)
    end = cutoff + horizon if horizon is not None else None
    later = load_interactions(store, end or datetime.max, mapping, since=cutoff)
    bought = later.events[later.events["is_purchase"]][["profile_id", "item"]].drop_duplicates()
    before = train.events[train.events["is_purchase"]][["profile_id", "item"]].drop_duplicates()
    warm_ids = set(before["profile_id"] if warm == "purchase" else train.events["profile_id"])
    bought = bought[bought["profile_id"].isin(warm_ids)]
    repeat = bought.merge(before.assign(repeat=True), on=["profile_id", "item"], how="left")
    repeat["repeat"] = repeat["repeat"].astype("boolean").fillna(False).astype(bool)
    return Split(train, repeat.reset_index(drop=True), cutoff, end)


def ranking_metrics(
    recs: pd.DataFrame, truth: pd.DataFrame, ks: Sequence[int] = (5, 10, 20)
) -> pd.DataFrame:
    """Per profile and k: hit_rate, recall, precision, map, ndcg (binary relevance).

    ``recs`` has profile_id, rank (1-based), item; ``truth`` has profile_id, item. Every profile
    in ``truth`` gets a row per k (zeros when it got no recommendation).
    """
    truth = truth.drop_duplicates(["profile_id", "item"])
    profiles = pd.Index(pd.unique(truth["profile_id"]), dtype=object)
    n_rel = truth.groupby("profile_id").size().reindex(profiles).to_numpy(dtype=float)
    hits = recs.merge(truth.assign(rel=True), on=["profile_id", "item"], how="inner")
    u = profiles.get_indexer(hits["profile_id"])
    rank = hits["rank"].to_numpy(dtype=int)
    keep = u >= 0
    u, rank = u[keep], rank[keep]
    frames = []
    for k in ks:
        in_k = rank <= k
        uu, rr = u[in_k], rank[in_k]
        n_hit = np.bincount(uu, minlength=len(profiles)).astype(float)
        # AP@k: precision at each relevant rank (hits above it + itself) / min(n_rel, k)
        order = np.lexsort((rr, uu))
        uu_s, rr_s = uu[order], rr[order]
        starts = np.searchsorted(uu_s, uu_s, side="left")
        cum = np.arange(len(uu_s)) - starts + 1
        ap = np.bincount(uu_s, weights=cum / rr_s, minlength=len(profiles))
        dcg = np.bincount(uu, weights=1.0 / np.log2(rr + 1.0), minlength=len(profiles))
        ideal_n = np.minimum(n_rel, k).astype(int)
        disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
        frames.append(
            pd.DataFrame(
                {
                    "profile_id": profiles,
                    "k": k,
                    "hit_rate": (n_hit > 0).astype(float),
                    "recall": n_hit / n_rel,
                    "precision": n_hit / k,
                    "map": ap / np.minimum(n_rel, k),
                    "ndcg": dcg / disc[ideal_n],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def bootstrap_ci(
    values: np.ndarray, *, reps: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the entries)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    step = max(1, 2_000_000 // max(len(values), 1))
    for start in range(0, reps, step):
        idx = rng.integers(0, len(values), size=(min(step, reps - start), len(values)))
        means[start : start + len(idx)] = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


@dataclass
class EvalReport:
    """Summary table (mode, strategy, k, metrics), bootstrap CIs, timings and sizes."""

    summary: pd.DataFrame
    intervals: pd.DataFrame
    per_profile: pd.DataFrame
    timings: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    cutoff: datetime | None = None

    def table(self, mode: str = "new", k: int | None = None) -> pd.DataFrame:
        """The summary of one mode (and k), rounded for printing."""
        df = self.summary[self.summary["mode"] == mode]
        if k is not None:
            df = df[df["k"] == k]
        return df.round(4).reset_index(drop=True)


Builder = Callable[[], Recommender]


def evaluate(
    store: Store,
    cutoff: datetime,
    strategies: Sequence[str] | dict[str, Builder] = ("popularity", "cooccurrence", "blend"),
    *,
    ks: Sequence[int] = (5, 10, 20),
    mapping: EventMapping | None = None,
    horizon: timedelta | None = None,
    modes: Sequence[str] = MODES,
    main_k: int = 10,
    reps: int = 1000,
    seed: int = 0,
    split: Split | None = None,
    warm: Literal["purchase", "any"] = "purchase",
    progress: Progress | None = None,
) -> EvalReport:
    """Fit every strategy on the train side, recommend max(ks) items, score both modes."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ConfigError("k values must be positive integers")
    if main_k not in ks:
        main_k = ks[len(ks) // 2]
    split = split or temporal_split(store, cutoff, mapping, horizon=horizon, warm=warm)
    builders: dict[str, Builder] = (
        dict(strategies)
        if isinstance(strategies, dict)
        else {s: partial(make_recommender, s, store) for s in strategies}
    )
    if "popularity" not in builders:
        builders = {"popularity": partial(make_recommender, "popularity", store), **builders}
    truths = {m: split.truth(m) for m in modes}
    if not split.train.events["is_purchase"].any():
        raise ConfigError(
            f"no purchases before the cutoff {cutoff:%Y-%m-%d %H:%M}: nothing to learn"
        )
    if all(t.empty for t in truths.values()):
        raise ConfigError(
            f"no profile with purchases before {cutoff:%Y-%m-%d %H:%M} bought anything after it"
        )
    timings: dict[str, float] = {}
    rows, per_profile = [], []
    with step(progress or SilentProgress(), "evaluating recommenders", len(builders)) as bar:
        for name, build in builders.items():
            started = time.perf_counter()
            rec = build().fit(split.train)
            timings[f"{name}.fit"] = time.perf_counter() - started
            for mode in modes:
                truth = truths[mode]
                profiles = list(pd.unique(truth["profile_id"]))
                started = time.perf_counter()
                recs = rec.recommend(profiles, max(ks), exclude_seen=mode == "new")
                timings[f"{name}.recommend.{mode}"] = time.perf_counter() - started
                scored = ranking_metrics(recs, truth, ks).assign(strategy=name, mode=mode)
                per_profile.append(scored)
                means = scored.groupby("k")[list(METRICS)].mean().reset_index()
                rows.append(means.assign(strategy=name, mode=mode, profiles=len(profiles)))
            bar.update(1, note=name)
    summary = pd.concat(rows, ignore_index=True)[["mode", "strategy", "k", *METRICS, "profiles"]]
    detail = pd.concat(per_profile, ignore_index=True)
    intervals = _intervals(detail, main_k, reps, seed)
    sizes = {
        "train_events": len(split.train.events),
        "train_profiles": split.train.n_profiles,
        "items": split.train.n_items,
        **{f"test_profiles_{m}": int(truths[m]["profile_id"].nunique()) for m in modes},
        **{f"test_pairs_{m}": len(truths[m]) for m in modes},
    }
    return EvalReport(summary, intervals, detail, timings, sizes, cutoff)


def _intervals(detail: pd.DataFrame, k: int, reps: int, seed: int) -> pd.DataFrame:
    """recall@k with a bootstrap CI, and the paired difference to popularity with its CI."""
    at_k = detail[detail["k"] == k]
    out = []
    for mode, part in at_k.groupby("mode", sort=False):
        wide = part.pivot(index="profile_id", columns="strategy", values="recall")
        base = wide["popularity"].to_numpy()
        for name in wide.columns:
            v = wide[name].to_numpy()
            low, high = bootstrap_ci(v, reps=reps, seed=seed)
            d_low, d_high = bootstrap_ci(v - base, reps=reps, seed=seed)
            out.append(
                {
                    "mode": mode,
                    "strategy": name,
                    "metric": f"recall@{k}",
                    "value": float(v.mean()),
                    "ci_low": low,
                    "ci_high": high,
                    "vs_popularity": float((v - base).mean()),
                    "diff_ci_low": d_low,
                    "diff_ci_high": d_high,
                }
            )
    return pd.DataFrame(out)


def plot_recall(report: EvalReport, path: str | Path, mode: str = "new") -> Path:
    """Bar chart of recall@k per strategy (one bar per k) written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = report.summary[report.summary["mode"] == mode]
    if df.empty:
        raise ConfigError(f"no results for mode '{mode}' to plot")
    wide = df.pivot(index="strategy", columns="k", values="recall")
    wide = wide.reindex([s for s in pd.unique(df["strategy"])])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(wide)), 4.0))
    width = 0.8 / len(wide.columns)
    x = np.arange(len(wide))
    for j, k in enumerate(wide.columns):
        ax.bar(x + j * width - 0.4 + width / 2, wide[k].to_numpy(), width, label=f"k={k}")
    ax.set_xticks(x, list(wide.index), rotation=20, ha="right")
    ax.set_ylabel("recall@k")
    when = f" (cutoff {report.cutoff:%Y-%m-%d})" if report.cutoff else ""
    ax.set_title(f"Recall@k per recommender, {mode} items{when}")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
