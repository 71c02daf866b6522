"""Point-in-time features and labels from an events frame, and temporal train/valid/test splits.

Every function takes an events DataFrame with columns ``profile_id``, ``ts`` and ``value``
(e.g. order value; extra columns are ignored) so it works on a CSV today and on the
``events`` table later. Features only ever look at events strictly before ``as_of``;
labels only at events in ``[as_of, as_of + horizon)`` — the two windows never overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "TARGETS",
    "TemporalSplit",
    "label_window",
    "point_in_time_features",
    "temporal_split",
    "training_frame",
]

TARGETS = ("purchase", "churn", "second_purchase")


def _check_events(events: pd.DataFrame) -> pd.DataFrame:
    missing = {"profile_id", "ts", "value"} - set(events.columns)
    if missing:
        raise ValueError(f"events is missing columns {sorted(missing)}; has {list(events.columns)}")
    out = events[["profile_id", "ts", "value"]].copy()
    out["ts"] = pd.to_datetime(out["ts"])
    out["value"] = pd.to_numeric(out["value"], errors="coerce").fillna(0.0).astype(float)
    return out


def point_in_time_features(
    events: pd.DataFrame, as_of: str | pd.Timestamp, *, windows: Sequence[int] = (30, 90)
) -> pd.DataFrame:
    """Behavioural features per profile from events strictly before ``as_of``.

    Columns: recency_days, tenure_days, frequency (distinct active days), n_events, monetary,
    avg_value (per active day), max_day_value, mean_gap_days, and per window w:
    events_{w}d, value_{w}d. Index: profile_id (profiles with at least one prior event).
    """
    cutoff = pd.Timestamp(as_of)
    ev = _check_events(events)
    ev = ev[ev["ts"] < cutoff]
    if ev.empty:
        raise ValueError(f"no events before as_of={cutoff}")
    ev = ev.assign(day=ev["ts"].dt.normalize())
    g = ev.groupby("profile_id", sort=True)
    first = g["ts"].min()
    last = g["ts"].max()
    daily = ev.groupby(["profile_id", "day"], sort=True)["value"].sum()
    days = daily.groupby(level=0)
    frequency = days.size().astype(float)
    monetary = g["value"].sum()
    tenure = (cutoff - first).dt.total_seconds() / 86400.0
    span = (last - first).dt.total_seconds() / 86400.0
    out = pd.DataFrame(
        {
            "recency_days": (cutoff - last).dt.total_seconds() / 86400.0,
            "tenure_days": tenure,
            "frequency": frequency,
            "n_events": g.size().astype(float),
            "monetary": monetary,
            "avg_value": monetary / frequency,
            "max_day_value": days.max(),
            "mean_gap_days": np.where(frequency > 1, span / (frequency - 1).clip(lower=1), tenure),
        }
    )
    for w in windows:
        if w <= 0:
            raise ValueError(f"windows must be positive day counts, got {list(windows)}")
        recent = ev[ev["ts"] >= cutoff - pd.Timedelta(days=w)].groupby("profile_id")
        out[f"events_{w}d"] = recent.size().reindex(out.index, fill_value=0).astype(float)
        out[f"value_{w}d"] = recent["value"].sum().reindex(out.index, fill_value=0.0)
    out.index.name = "profile_id"
    return out


def label_window(
    events: pd.DataFrame, profiles: pd.Index, as_of: str | pd.Timestamp, horizon_days: int
) -> pd.Series:
    """1 if the profile has an event in ``[as_of, as_of + horizon_days)`` else 0."""
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    start = pd.Timestamp(as_of)
    ev = _check_events(events)
    hit = ev[(ev["ts"] >= start) & (ev["ts"] < start + pd.Timedelta(days=horizon_days))]
    active = set(hit["profile_id"].unique())
    return pd.Series([int(p in active) for p in profiles], index=profiles, name="label", dtype=int)


def training_frame(
    events: pd.DataFrame,
    as_of: str | pd.Timestamp,
    *,
    target: str = "purchase",
    horizon_days: int = 30,
    windows: Sequence[int] = (30, 90),
) -> tuple[pd.DataFrame, pd.Series]:
    """Features at ``as_of`` and the label over the following ``horizon_days``.

    Targets: ``purchase`` (buys in the horizon), ``churn`` (does not buy in the horizon),
    ``second_purchase`` (only single-purchase-day profiles; buys again in the horizon).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    X = point_in_time_features(events, as_of, windows=windows)
    if target == "second_purchase":
        X = X[X["frequency"] == 1]
    y = label_window(events, X.index, as_of, horizon_days)
    if target == "churn":
        y = 1 - y
    return X, y.rename(target)


@dataclass(frozen=True)
class TemporalSplit:
    """Stacked snapshot frames for train / validation / test with their as_of dates."""

    X_train: pd.DataFrame
    y_train: pd.Series
    X_valid: pd.DataFrame
    y_valid: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    train_as_of: tuple[pd.Timestamp, ...]
    valid_as_of: pd.Timestamp
    test_as_of: pd.Timestamp
    horizon_days: int


def temporal_split(
    events: pd.DataFrame,
    *,
    train_as_of: Sequence[str | pd.Timestamp],
    valid_as_of: str | pd.Timestamp,
    test_as_of: str | pd.Timestamp,
    target: str = "purchase",
    horizon_days: int = 30,
    windows: Sequence[int] = (30, 90),
) -> TemporalSplit:
    """Build train (several snapshots stacked), validation and test frames without leakage.

    Every training label window must end on or before ``valid_as_of`` and the validation
    window on or before ``test_as_of``; otherwise ``ValueError`` (future outcomes would leak
    into training). Rows are indexed by (as_of, profile_id).
    """
    horizon = pd.Timedelta(days=horizon_days)
    train_dates = tuple(sorted(pd.Timestamp(t) for t in train_as_of))
    valid, test = pd.Timestamp(valid_as_of), pd.Timestamp(test_as_of)
    if not train_dates:
        raise ValueError("train_as_of must name at least one snapshot date")
    if train_dates[-1] + horizon > valid:
        raise ValueError(
            f"leakage: last training snapshot {train_dates[-1].date()} + {horizon_days} d label window "
            f"ends after valid_as_of {valid.date()}"
        )
    if valid + horizon > test:
        raise ValueError(
            f"leakage: validation snapshot {valid.date()} + {horizon_days} d ends after test_as_of {test.date()}"
        )

    def frame(dates: Sequence[pd.Timestamp]) -> tuple[pd.DataFrame, pd.Series]:
        xs, ys = [], []
        for d in dates:
            X, y = training_frame(
                events, d, target=target, horizon_days=horizon_days, windows=windows
            )
            idx = pd.MultiIndex.from_arrays([[d] * len(X), X.index], names=["as_of", "profile_id"])
            xs.append(X.set_axis(idx))
            ys.append(y.set_axis(idx))
        return pd.concat(xs), pd.concat(ys)

    X_tr, y_tr = frame(train_dates)
    X_va, y_va = frame([valid])
    X_te, y_te = frame([test])
    return TemporalSplit(X_tr, y_tr, X_va, y_va, X_te, y_te, train_dates, valid, test, horizon_days)
