"""Point-in-time features and temporal splits: no outcome ever leaks into features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from microseg.predict.features import (
    label_window,
    point_in_time_features,
    temporal_split,
    training_frame,
)


def make_events(n_profiles: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for i in range(n_profiles):
        rate = rng.gamma(1.0, 0.05)  # purchases per day
        t = rng.exponential(60)
        while t < 365:
            rows.append((f"p{i:04d}", start + pd.Timedelta(days=float(t)), float(rng.gamma(2, 20))))
            t += rng.exponential(1 / rate)
    return pd.DataFrame(rows, columns=["profile_id", "ts", "value"])


def test_features_ignore_everything_at_or_after_as_of() -> None:
    events = make_events()
    as_of = pd.Timestamp("2024-07-01")
    before = point_in_time_features(events, as_of)
    future = events["ts"] >= as_of
    tampered = events.copy()
    tampered.loc[future, "value"] = 1e9  # change the future…
    extra = pd.DataFrame(
        {
            "profile_id": ["p0000", "new"],
            "ts": [as_of, as_of + pd.Timedelta(days=3)],
            "value": [5.0, 5.0],
        }
    )
    tampered = pd.concat([tampered, extra], ignore_index=True)  # …and add future events
    after = point_in_time_features(tampered, as_of)
    pd.testing.assert_frame_equal(before, after)
    assert "new" not in after.index
    assert (after["recency_days"] > 0).all()


def test_feature_values_on_a_tiny_history() -> None:
    events = pd.DataFrame(
        {
            "profile_id": ["a", "a", "a"],
            "ts": pd.to_datetime(["2024-01-01 10:00", "2024-01-01 12:00", "2024-01-21 10:00"]),
            "value": [10.0, 30.0, 20.0],
        }
    )
    f = point_in_time_features(events, "2024-01-31 10:00", windows=(14,)).loc["a"]
    assert f["recency_days"] == pytest.approx(10.0)
    assert f["tenure_days"] == pytest.approx(30.0)
    assert f["frequency"] == 2 and f["n_events"] == 3
    assert f["monetary"] == 60 and f["avg_value"] == 30 and f["max_day_value"] == 40
    assert f["mean_gap_days"] == pytest.approx(20.0)
    assert f["events_14d"] == 1 and f["value_14d"] == 20


def test_labels_only_look_at_the_horizon() -> None:
    events = make_events()
    as_of = pd.Timestamp("2024-06-01")
    X, y = training_frame(events, as_of, target="purchase", horizon_days=30)
    window = events[(events["ts"] >= as_of) & (events["ts"] < as_of + pd.Timedelta(days=30))]
    assert set(y[y == 1].index) == set(window["profile_id"]) & set(X.index)
    _, churn = training_frame(events, as_of, target="churn", horizon_days=30)
    assert ((churn + y) == 1).all()
    X2, y2 = training_frame(events, as_of, target="second_purchase", horizon_days=30)
    assert (X2["frequency"] == 1).all() and set(X2.index) <= set(X.index)
    assert (y2 == y.loc[X2.index].rename("second_purchase")).all()
    with pytest.raises(ValueError, match="target must be one of"):
        training_frame(events, as_of, target="teleport")
    with pytest.raises(ValueError, match="horizon_days"):
        label_window(events, X.index, as_of, 0)


def test_temporal_split_refuses_overlapping_windows() -> None:
    events = make_events()
    with pytest.raises(ValueError, match="leakage"):
        temporal_split(
            events,
            train_as_of=["2024-05-01", "2024-06-15"],
            valid_as_of="2024-07-01",
            test_as_of="2024-08-01",
        )
    with pytest.raises(ValueError, match="leakage"):
        temporal_split(
            events, train_as_of=["2024-05-01"], valid_as_of="2024-06-01", test_as_of="2024-06-15"
        )


def test_temporal_split_orders_snapshots_and_labels() -> None:
    events = make_events()
    split = temporal_split(
        events,
        train_as_of=["2024-04-01", "2024-05-01", "2024-06-01"],
        valid_as_of="2024-07-01",
        test_as_of="2024-08-01",
        horizon_days=30,
    )
    train_dates = split.X_train.index.get_level_values("as_of")
    assert train_dates.max() + pd.Timedelta(days=30) <= split.valid_as_of
    assert set(split.X_valid.index.get_level_values("as_of")) == {split.valid_as_of}
    assert split.X_train.index.equals(split.y_train.index)
    # The stacked training rows equal independent snapshots: nothing from later dates slipped in.
    X_may, y_may = training_frame(events, "2024-05-01", horizon_days=30)
    pd.testing.assert_frame_equal(
        split.X_train.xs(pd.Timestamp("2024-05-01"), level="as_of"), X_may
    )
    pd.testing.assert_series_equal(
        split.y_train.xs(pd.Timestamp("2024-05-01"), level="as_of"), y_may
    )
