"""Multi-touch attribution: rule-based models and a data-driven Markov chain.

Input: one row per touchpoint with a journey (or profile) id, a timestamp, a channel and a
``converted`` flag (the touch on which the journey converted); optionally a conversion value.
Touches after a journey's conversion are ignored. Models:

* ``first``, ``last``, ``linear``;
* ``time_decay`` — weight ``2^(-(t_conversion - t_touch)/half_life)``;
* ``position`` — 40 % first, 40 % last, 20 % spread over the middle (50/50 with two touches);
* ``markov`` — first-order absorbing chain (start → channels → conversion | null). The
  conversion probability is solved exactly from ``(I - Q) x = r`` with numpy; the *removal
  effect* of a channel is ``1 - P(conv | channel removed) / P(conv)``, and conversions are
  shared in proportion to removal effects. :func:`simulate_conversion` is a Monte Carlo
  cross-check of the same quantities.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from microseg.errors import MicrosegError, did_you_mean

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MODELS = ("first", "last", "linear", "time_decay", "position", "markov")
START, CONV, NULL = "(start)", "(conversion)", "(null)"


@dataclass(frozen=True)
class Journey:
    """Ordered channels of one journey and whether (and for how much) it converted."""

    journey_id: str
    channels: tuple[str, ...]
    ages: tuple[float, ...]  # time from each touch to conversion (or to the last touch), seconds
    converted: bool
    value: float


def build_journeys(
    touchpoints: pd.DataFrame,
    *,
    journey_col: str = "journey_id",
    ts_col: str = "ts",
    channel_col: str = "channel",
    converted_col: str = "converted",
    value_col: str | None = None,
) -> list[Journey]:
    """Group touchpoints into journeys, cut at the first conversion."""
    cols = [journey_col, ts_col, channel_col, converted_col] + ([value_col] if value_col else [])
    for c in cols:
        if c not in touchpoints.columns:
            raise MicrosegError(
                f"touchpoints lack column {c!r}{did_you_mean(c, map(str, touchpoints.columns))}; "
                f"found {list(touchpoints.columns)}"
            )
    df = touchpoints[cols].copy()
    if df[channel_col].isna().any() or df[ts_col].isna().any():
        raise MicrosegError("touchpoints have missing channel or timestamp values")
    df[ts_col] = pd.to_datetime(df[ts_col])
    df = df.sort_values([journey_col, ts_col], kind="mergesort")
    journeys: list[Journey] = []
    for jid, g in df.groupby(journey_col, sort=True):
        conv = _as_bool(g[converted_col])
        if conv.any():
            cut = int(np.argmax(conv)) + 1
            g = g.iloc[:cut]
        ts = g[ts_col].to_numpy()
        ages = ((ts[-1] - ts) / np.timedelta64(1, "s")).astype(float)
        value = (
            float(g[value_col].fillna(0).sum()) if value_col and conv.any() else float(conv.any())
        )
        journeys.append(
            Journey(str(jid), tuple(map(str, g[channel_col])), tuple(ages), bool(conv.any()), value)
        )
    return journeys


_TRUE = {"1", "1.0", "true", "t", "yes", "y"}
_FALSE = {"0", "0.0", "false", "f", "no", "n", "", "nan", "none"}


def _as_bool(values: pd.Series) -> np.ndarray:
    """0/1, booleans or yes/no/true/false text as a boolean array (missing = False)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.fillna(0).astype(float).to_numpy() != 0
    text = values.astype("string").str.strip().str.lower().fillna("")
    bad = sorted(set(text) - _TRUE - _FALSE)
    if bad:
        raise MicrosegError(f"converted flag must be true/false, yes/no or 0/1; got {bad[:5]}")
    return text.isin(list(_TRUE)).to_numpy(dtype=bool)


def _weights(j: Journey, model: str, half_life_s: float) -> np.ndarray:
    k = len(j.channels)
    if model == "first":
        w = np.zeros(k)
        w[0] = 1
    elif model == "last":
        w = np.zeros(k)
        w[-1] = 1
    elif model == "linear":
        w = np.full(k, 1 / k)
    elif model == "time_decay":
        w = np.power(2.0, -np.asarray(j.ages) / half_life_s)
        w = w / w.sum()
    elif model == "position":
        if k <= 2:
            w = np.full(k, 1 / k)
        else:
            w = np.full(k, 0.2 / (k - 2))
            w[0] = w[-1] = 0.4
    else:
        raise MicrosegError(f"unknown attribution model {model!r}{did_you_mean(model, MODELS)}")
    return w


def attribute(
    touchpoints: pd.DataFrame,
    model: str = "linear",
    *,
    half_life: pd.Timedelta | str = "7D",
    journey_col: str = "journey_id",
    ts_col: str = "ts",
    channel_col: str = "channel",
    converted_col: str = "converted",
    value_col: str | None = None,
) -> pd.DataFrame:
    """Credit per channel: ``channel, conversions, value, share`` (+ ``removal_effect``)."""
    if model not in MODELS:
        raise MicrosegError(f"unknown attribution model {model!r}{did_you_mean(model, MODELS)}")
    journeys = build_journeys(
        touchpoints,
        journey_col=journey_col,
        ts_col=ts_col,
        channel_col=channel_col,
        converted_col=converted_col,
        value_col=value_col,
    )
    if model == "markov":
        return markov_attribution(journeys)
    hl = pd.Timedelta(half_life).total_seconds()
    if hl <= 0:
        raise MicrosegError(f"half_life must be positive, got {half_life!r}")
    conv: dict[str, float] = {}
    val: dict[str, float] = {}
    for j in journeys:
        for ch in j.channels:
            conv.setdefault(ch, 0.0)
            val.setdefault(ch, 0.0)
        if not j.converted:
            continue
        for ch, w in zip(j.channels, _weights(j, model, hl), strict=True):
            conv[ch] += w
            val[ch] += w * j.value
    return _frame(conv, val)


def _frame(
    conv: dict[str, float], val: dict[str, float], extra: dict[str, float] | None = None
) -> pd.DataFrame:
    df = pd.DataFrame(
        {"channel": list(conv), "conversions": list(conv.values()), "value": [val[c] for c in conv]}
    )
    total = df["conversions"].sum()
    df["share"] = df["conversions"] / total if total > 0 else 0.0
    if extra is not None:
        df["removal_effect"] = [extra.get(c, 0.0) for c in df["channel"]]
    return df.sort_values(["conversions", "channel"], ascending=[False, True], ignore_index=True)


# --------------------------------------------------------------------------- Markov


@dataclass(frozen=True)
class MarkovChain:
    """First-order transition matrix over ``states``: (start), channels…, (conversion), (null)."""

    states: tuple[str, ...]
    matrix: np.ndarray

    @property
    def channels(self) -> tuple[str, ...]:
        return self.states[1:-2]


def fit_markov(journeys: Sequence[Journey]) -> MarkovChain:
    """Maximum-likelihood transition probabilities from all journeys (converting or not)."""
    channels = sorted({c for j in journeys for c in j.channels})
    states = (START, *channels, CONV, NULL)
    idx = {s: i for i, s in enumerate(states)}
    counts = np.zeros((len(states), len(states)))
    for j in journeys:
        if not j.channels:
            continue
        path = [START, *j.channels, CONV if j.converted else NULL]
        for a, b in itertools.pairwise(path):
            counts[idx[a], idx[b]] += 1
    counts[idx[CONV], idx[CONV]] = counts[idx[NULL], idx[NULL]] = 1
    rows = counts.sum(axis=1, keepdims=True)
    matrix = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    return MarkovChain(states, matrix)


def conversion_probability(chain: MarkovChain, removed: str | None = None) -> float:
    """Exact probability of absorbing in (conversion) from (start), optionally with one
    channel removed (its incoming transitions go to (null))."""
    n = len(chain.states)
    transient = list(range(n - 2))
    if removed is not None:
        if removed not in chain.channels:
            raise MicrosegError(
                f"unknown channel {removed!r}{did_you_mean(removed, chain.channels)}"
            )
        transient.remove(chain.states.index(removed))
    q = chain.matrix[np.ix_(transient, transient)]
    r = chain.matrix[transient, n - 2]
    x = np.linalg.solve(np.eye(len(transient)) - q, r)
    return float(x[0])


def removal_effects(chain: MarkovChain) -> dict[str, float]:
    """``1 - P(conv without channel) / P(conv)`` for every channel (0 if nothing converts)."""
    base = conversion_probability(chain)
    if base <= 0:
        return {c: 0.0 for c in chain.channels}
    return {c: 1.0 - conversion_probability(chain, c) / base for c in chain.channels}


def simulate_conversion(
    chain: MarkovChain,
    removed: str | None = None,
    n_paths: int = 100_000,
    max_steps: int = 1_000,
    random_state: int | None = 0,
) -> float:
    """Monte Carlo estimate of :func:`conversion_probability` by random walks."""
    rng = np.random.default_rng(random_state)
    n = len(chain.states)
    cum = np.cumsum(chain.matrix, axis=1)
    cum[:, -1] = 1.0
    dead = chain.states.index(removed) if removed is not None else -1
    state = np.zeros(n_paths, dtype=np.int64)
    active = np.ones(n_paths, dtype=bool)
    for _ in range(max_steps):
        if not active.any():
            break
        u = rng.random(int(active.sum()))
        nxt = (u[:, None] > cum[state[active]]).sum(axis=1)
        nxt = np.where(nxt == dead, n - 1, nxt)
        state[active] = np.minimum(nxt, n - 1)
        active = state < n - 2
    return float((state == n - 2).mean())


def markov_attribution(journeys: Sequence[Journey]) -> pd.DataFrame:
    """Share conversions and value across channels in proportion to removal effects."""
    chain = fit_markov(journeys)
    effects = removal_effects(chain)
    total_eff = sum(effects.values())
    conversions = sum(1.0 for j in journeys if j.converted)
    value = sum(j.value for j in journeys if j.converted)
    share = {c: (e / total_eff if total_eff > 0 else 0.0) for c, e in effects.items()}
    return _frame(
        {c: s * conversions for c, s in share.items()},
        {c: s * value for c, s in share.items()},
        effects,
    )


def compare_models(
    touchpoints: pd.DataFrame, models: Sequence[str] = MODELS, **kwargs: object
) -> pd.DataFrame:
    """Long table of every model's credit: ``model, channel, conversions, value, share``."""
    frames = [attribute(touchpoints, m, **kwargs).assign(model=m) for m in models]  # type: ignore[arg-type]
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "channel", "conversions", "value", "share"]]


def plot_attribution(df: pd.DataFrame, metric: str = "share") -> Figure:
    """Bar chart of credit per channel (grouped by model when ``df`` has a ``model`` column)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if metric not in df.columns or "channel" not in df.columns:
        raise MicrosegError(
            f"attribution table needs 'channel' and {metric!r}; has {list(df.columns)}"
        )
    wide = (
        df.pivot_table(index="channel", columns="model", values=metric, aggfunc="sum")
        if "model" in df.columns
        else df.set_index("channel")[[metric]]
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(wide)), 4))
    wide.plot.bar(ax=ax, rot=0)
    ax.set_ylabel(metric)
    ax.set_title("Attribution by channel")
    fig.tight_layout()
    return fig
