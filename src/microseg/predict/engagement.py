"""Engagement scores: the hand-weighted score and one learned from outcomes.

The weighted score is ``sum_i w_i * count_i`` scaled to 0–100 by percentile. The learned
score fits non-negative weights (an L2 logistic regression on log1p counts whose negative
coefficients are clipped and the model refitted without them) so that the score ranks
profiles by the chance of the chosen outcome (purchase, retention, …), and reports the
learned weights so they can be compared with — or replace — the hand-set ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

__all__ = ["LearnedEngagementScore", "weighted_engagement_score"]


def _percentile_0_100(raw: np.ndarray) -> np.ndarray:
    ranks = pd.Series(raw).rank(method="average", pct=True).to_numpy()
    return np.asarray(np.round(100.0 * ranks, 2))


def weighted_engagement_score(counts: pd.DataFrame, weights: Mapping[str, float]) -> pd.Series:
    """Hand-weighted engagement score (0–100 percentile) from per-profile activity counts."""
    unknown = set(weights) - set(counts.columns)
    if unknown:
        raise ValueError(
            f"weights name unknown columns {sorted(unknown)}; have {list(counts.columns)}"
        )
    raw = sum(float(w) * counts[c].astype(float) for c, w in weights.items())
    return pd.Series(
        _percentile_0_100(np.asarray(raw, dtype=float)), index=counts.index, name="engagement"
    )


class LearnedEngagementScore(BaseEstimator):
    """Engagement score whose weights are learned from an outcome.

    Parameters
    ----------
    C : float
        Inverse L2 strength.
    non_negative : bool
        Keep only activities that raise the outcome (interpretable "more activity = more engaged").
    random_state : int | None
    """

    def __init__(
        self, *, C: float = 1.0, non_negative: bool = True, random_state: int | None = 0
    ) -> None:
        self.C = C
        self.non_negative = non_negative
        self.random_state = random_state

    def fit(self, counts: pd.DataFrame, outcome: pd.Series | np.ndarray) -> LearnedEngagementScore:
        """Learn weights per activity column; returns self."""
        y = np.asarray(outcome).astype(int)
        if len(counts) != len(y):
            raise ValueError(f"counts has {len(counts)} rows, outcome has {len(y)}")
        if len(np.unique(y)) != 2:
            raise ValueError(
                f"outcome must contain both 0 and 1, got {sorted(np.unique(y).tolist())}"
            )
        Z = np.log1p(counts.clip(lower=0).to_numpy(dtype=float))
        self.scale_ = Z.std(axis=0)
        self.scale_[self.scale_ == 0] = 1.0
        Zs = Z / self.scale_
        active = np.ones(Z.shape[1], dtype=bool)
        for _ in range(Z.shape[1]):
            model = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
            model.fit(Zs[:, active], y)
            coef = np.zeros(Z.shape[1])
            coef[active] = model.coef_[0]
            if not self.non_negative or not np.any(coef[active] < 0):
                break
            active &= coef > 0
            if not active.any():
                break
        self.columns_ = [str(c) for c in counts.columns]
        self.coef_ = np.where(active, coef, 0.0)
        self.intercept_ = float(model.intercept_[0]) if active.any() else 0.0
        total = np.abs(self.coef_).sum()
        self.weights_ = {
            c: float(w / total) if total > 0 else 0.0
            for c, w in zip(self.columns_, self.coef_, strict=True)
        }
        return self

    def raw_score(self, counts: pd.DataFrame) -> np.ndarray:
        """Learned log-odds index (before the 0–100 percentile transform)."""
        check_is_fitted(self, "coef_")
        cols = [str(c) for c in counts.columns]
        if cols != self.columns_:
            raise ValueError(f"columns {cols} differ from fitted {self.columns_}")
        Z = np.log1p(counts.clip(lower=0).to_numpy(dtype=float)) / self.scale_
        return np.asarray(Z @ self.coef_ + self.intercept_)

    def score(self, counts: pd.DataFrame) -> pd.Series:
        """Engagement 0–100 (percentile of the learned index) per profile."""
        return pd.Series(
            _percentile_0_100(self.raw_score(counts)), index=counts.index, name="engagement"
        )
