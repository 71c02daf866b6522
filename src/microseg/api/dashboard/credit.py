"""Channel credit for every attribution model at once, vectorised for dashboard latency.

Same semantics as :func:`microseg.measure.attribution.attribute` (tests compare the two on
random touchpoints): journeys are cut at their first converting touch; ``first``, ``last``,
``linear``, ``time_decay`` (``2^(-age/half_life)``, normalised) and ``position`` (40/20/40,
50/50 with two touches) weights are computed with pandas group operations instead of a
Python loop per journey, and ``markov`` gets the cut journeys as
:class:`~microseg.measure.attribution.Journey` objects for
:func:`~microseg.measure.attribution.markov_attribution`. One pass serves all models: on
200k touchpoints this takes about a second where ``attribute`` takes ~30 s per model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from microseg.errors import MicrosegError, did_you_mean
from microseg.measure.attribution import MODELS, Journey, markov_attribution

COLUMNS = ("journey_id", "ts", "channel", "converted", "value")


def cut_journeys(touchpoints: pd.DataFrame) -> pd.DataFrame:
    """Touches ordered per journey up to the first conversion, with ``pos, k, age_s,
    journey_converted, journey_value`` columns."""
    missing = [c for c in COLUMNS if c not in touchpoints.columns]
    if missing:
        raise MicrosegError(f"touchpoints lack columns {missing}")
    if touchpoints["channel"].isna().any() or touchpoints["ts"].isna().any():
        raise MicrosegError("touchpoints have missing channel or timestamp values")
    df = touchpoints[list(COLUMNS)].copy()
    df["ts"] = pd.to_datetime(df["ts"])
    df["converted"] = df["converted"].fillna(False).astype(bool)
    df["value"] = pd.to_numeric(df["value"]).fillna(0.0).astype(float)
    df["channel"] = df["channel"].astype(str)
    df = df.sort_values(["journey_id", "ts"], kind="mergesort", ignore_index=True)
    before = df.groupby("journey_id", sort=False)["converted"].cumsum() - df["converted"]
    df = df[before == 0].reset_index(drop=True)
    g = df.groupby("journey_id", sort=False)
    df["pos"] = g.cumcount()
    df["k"] = g["channel"].transform("size")
    df["age_s"] = (g["ts"].transform("max") - df["ts"]).dt.total_seconds()
    df["journey_converted"] = g["converted"].transform("any")
    df["journey_value"] = np.where(df["journey_converted"], g["value"].transform("sum"), 0.0)
    return df


def _weights(df: pd.DataFrame, model: str, half_life_s: float) -> pd.Series:
    pos, k = df["pos"], df["k"]
    if model == "first":
        return (pos == 0).astype(float)
    if model == "last":
        return (pos == k - 1).astype(float)
    if model == "linear":
        return 1.0 / k
    if model == "time_decay":
        raw = np.power(2.0, -df["age_s"] / half_life_s)
        return raw / raw.groupby(df["journey_id"], sort=False).transform("sum")
    ends = (pos == 0) | (pos == k - 1)
    middle = 0.2 / (k - 2).clip(lower=1)
    return pd.Series(np.where(k <= 2, 1.0 / k, np.where(ends, 0.4, middle)), index=df.index)


def _frame(conv: pd.Series, val: pd.Series, extra: dict[str, float] | None = None) -> pd.DataFrame:
    out = pd.DataFrame(
        {"channel": conv.index.astype(str), "conversions": conv.values, "value": val.values}
    )
    total = out["conversions"].sum()
    out["share"] = out["conversions"] / total if total > 0 else 0.0
    if extra is not None:
        out["removal_effect"] = [extra.get(c, 0.0) for c in out["channel"]]
    return out.sort_values(["conversions", "channel"], ascending=[False, True], ignore_index=True)


def journeys_of(df: pd.DataFrame) -> list[Journey]:
    """The cut journeys as Journey objects (for the Markov model)."""
    g = df.groupby("journey_id", sort=True)
    agg = g.agg(
        channels=("channel", tuple),
        ages=("age_s", tuple),
        converted=("journey_converted", "first"),
        value=("journey_value", "first"),
    )
    return [
        Journey(str(jid), r.channels, r.ages, bool(r.converted), float(r.value))
        for jid, r in zip(agg.index, agg.itertuples(index=False), strict=True)
    ]


def credit_by_model(
    touchpoints: pd.DataFrame,
    models: Sequence[str] = MODELS,
    half_life: pd.Timedelta | str = "7D",
) -> pd.DataFrame:
    """Long table ``model, channel, conversions, value, share`` for every requested model."""
    for m in models:
        if m not in MODELS:
            raise MicrosegError(f"unknown attribution model {m!r}{did_you_mean(m, MODELS)}")
    hl = pd.Timedelta(half_life).total_seconds()
    if hl <= 0:
        raise MicrosegError(f"half_life must be positive, got {half_life!r}")
    df = cut_journeys(touchpoints)
    channels = sorted(set(df["channel"]))
    conv_rows = df[df["journey_converted"]]
    frames = []
    for model in models:
        if model == "markov":
            credit = markov_attribution(journeys_of(df))
        else:
            w = _weights(conv_rows, model, hl)
            conv = w.groupby(conv_rows["channel"]).sum().reindex(channels, fill_value=0.0)
            val = (
                (w * conv_rows["journey_value"])
                .groupby(conv_rows["channel"])
                .sum()
                .reindex(channels, fill_value=0.0)
            )
            credit = _frame(conv.astype(float), val.astype(float))
        frames.append(credit[["channel", "conversions", "value", "share"]].assign(model=model))
    if not frames:
        return pd.DataFrame(columns=["model", "channel", "conversions", "value", "share"])
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "channel", "conversions", "value", "share"]]
