"""Threshold tuning on validation scores, and ranking segments by predicted value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score

from microseg.predict.clv import rank_segments_by_value
from microseg.predict.propensity import tune_threshold


def scores(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 1)))
    return y, s


def test_f1_threshold_is_the_best_on_a_grid() -> None:
    y, s = scores()
    tuned = tune_threshold(y, s)
    assert tuned["f1"] == pytest.approx(f1_score(y, s >= tuned["threshold"]))
    grid = np.quantile(s, np.linspace(0.01, 0.99, 99))
    assert tuned["f1"] >= max(f1_score(y, s >= t) for t in grid) - 1e-9
    assert tuned["flagged_share"] == pytest.approx(np.mean(s >= tuned["threshold"]))


def test_min_precision_threshold() -> None:
    y, s = scores(seed=1)
    tuned = tune_threshold(y, s, min_precision=0.6)
    assert tuned["precision"] >= 0.6
    assert precision_score(y, s >= tuned["threshold"]) == pytest.approx(tuned["precision"])
    looser = tune_threshold(y, s, min_precision=0.4)
    assert looser["recall"] >= tuned["recall"]
    with pytest.raises(ValueError, match="no threshold reaches precision"):
        tune_threshold(np.r_[0, 1, 0, 1], np.r_[0.9, 0.1, 0.8, 0.2], min_precision=0.99)


def test_rank_segments_by_value() -> None:
    clv = pd.Series({"a": 100.0, "b": 50.0, "c": 10.0, "d": 5.0})
    membership = pd.Series({"a": "vip", "b": "regular", "c": "regular", "d": "regular", "e": "new"})
    ranked = rank_segments_by_value(clv, membership)
    assert list(ranked.index) == ["vip", "regular", "new"]
    assert ranked.loc["regular", "size"] == 3 and ranked.loc["regular", "total_value"] == 65
    assert ranked.loc["new", "total_value"] == 0  # no prediction counts as 0
    assert ranked["share_of_value"].sum() == pytest.approx(1.0)
    assert ranked.loc["vip", "mean_value"] == 100
    with pytest.raises(ValueError, match="one segment per profile"):
        rank_segments_by_value(clv, pd.Series(["x", "y"], index=["a", "a"]))
