"""Online SGD learning with partial_fit, and the learned engagement score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from microseg.predict.engagement import LearnedEngagementScore, weighted_engagement_score
from microseg.predict.online import OnlinePropensity


def stream(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * np.array([1.0, 10.0, 100.0, 1.0]) + np.array([0, 50, 1000, 0])
    logit = 1.5 * X[:, 0] + 0.1 * (X[:, 1] - 50) - 0.005 * (X[:, 2] - 1000)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def test_partial_fit_learns_as_batches_arrive() -> None:
    X, y = stream(20_000, 0)
    X_test, y_test = stream(5000, 1)
    model = OnlinePropensity(random_state=0)
    aucs = []
    for start in range(0, len(X), 1000):
        model.partial_fit(X[start : start + 1000], y[start : start + 1000])
        aucs.append(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1]))
    assert model.n_seen_ == 20_000
    batch = LogisticRegression(max_iter=1000).fit((X - X.mean(0)) / X.std(0), y)
    batch_auc = roc_auc_score(y_test, batch.predict_proba((X_test - X.mean(0)) / X.std(0))[:, 1])
    assert aucs[-1] > batch_auc - 0.01
    assert aucs[-1] >= aucs[0] - 0.005


def test_online_rejects_bad_batches() -> None:
    model = OnlinePropensity()
    with pytest.raises(ValueError, match="0/1"):
        model.partial_fit(np.zeros((3, 2)), [0, 1, 2])
    model.partial_fit(np.random.default_rng(0).normal(size=(10, 2)), [0, 1] * 5)
    with pytest.raises(ValueError, match="3 features"):
        model.partial_fit(np.zeros((2, 3)), [0, 1])


def activity(n: int = 5000, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    counts = pd.DataFrame(
        {
            "page_view": rng.poisson(20, n),
            "add_to_cart": rng.poisson(1.0, n),
            "email_open": rng.poisson(3, n),
            "support_ticket": rng.poisson(0.5, n),
        },
        index=[f"p{i}" for i in range(n)],
    )
    logit = (
        -2
        + 1.2 * np.log1p(counts["add_to_cart"])
        + 0.4 * np.log1p(counts["email_open"])
        - 0.8 * counts["support_ticket"]
    )
    y = pd.Series((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int), index=counts.index)
    return counts, y


def test_learned_engagement_beats_the_hand_weighted_score() -> None:
    counts, y = activity()
    test_counts, test_y = activity(seed=1)
    learned = LearnedEngagementScore().fit(counts, y)
    assert learned.weights_["add_to_cart"] == max(learned.weights_.values())
    assert (
        learned.weights_["support_ticket"] == 0.0
    )  # negative effect clipped: non-negative weights
    assert sum(learned.weights_.values()) == pytest.approx(1.0)
    hand = weighted_engagement_score(
        test_counts, {"page_view": 1, "add_to_cart": 5, "email_open": 1, "support_ticket": 1}
    )
    learned_score = learned.score(test_counts)
    assert learned_score.between(0, 100).all()
    assert roc_auc_score(test_y, learned_score) > roc_auc_score(test_y, hand) + 0.02
    with pytest.raises(ValueError, match="unknown columns"):
        weighted_engagement_score(counts, {"teleport": 1})
    with pytest.raises(ValueError, match="both 0 and 1"):
        LearnedEngagementScore().fit(counts, y * 0)
