"""Online propensity learning (S8): an SGD logistic model updated with ``partial_fit``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import SGDClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

__all__ = ["OnlinePropensity"]


class OnlinePropensity(ClassifierMixin, BaseEstimator):
    """Logistic model learned incrementally as labelled events arrive.

    Each ``partial_fit`` batch first updates running feature means / variances, then takes
    SGD steps on the standardised batch, so the model can be scored between batches.

    Parameters
    ----------
    alpha : float
        L2 regularisation strength of the SGD learner.
    learning_rate : str
        SGDClassifier schedule ("optimal", "adaptive", "invscaling", "constant").
    eta0 : float
        Initial step size for non-"optimal" schedules.
    average : bool
        Averaged SGD (Polyak averaging): much steadier scores between batches.
    random_state : int | None
    """

    def __init__(
        self,
        *,
        alpha: float = 1e-4,
        learning_rate: str = "optimal",
        eta0: float = 0.01,
        average: bool = True,
        random_state: int | None = 0,
    ) -> None:
        self.alpha = alpha
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.average = average
        self.random_state = random_state

    def partial_fit(
        self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray
    ) -> OnlinePropensity:
        """Update the model with one batch of labelled rows; returns self."""
        values = np.asarray(X, dtype=float)
        target = np.asarray(y).astype(int)
        if values.ndim != 2 or len(values) != len(target):
            raise ValueError(
                f"X must be 2-D with one row per label; got shape {values.shape}, {len(target)} labels"
            )
        if not set(np.unique(target).tolist()) <= {0, 1}:
            raise ValueError(f"labels must be 0/1, got {sorted(set(np.unique(target).tolist()))}")
        if not hasattr(self, "sgd_"):
            self.scaler_ = StandardScaler()
            self.sgd_ = SGDClassifier(
                loss="log_loss",
                alpha=self.alpha,
                learning_rate=self.learning_rate,
                eta0=self.eta0,
                average=self.average,
                random_state=self.random_state,
            )
            self.n_features_in_ = values.shape[1]
            self.classes_ = np.array([0, 1])
            self.n_seen_ = 0
            if isinstance(X, pd.DataFrame):
                self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
        elif values.shape[1] != self.n_features_in_:
            raise ValueError(
                f"batch has {values.shape[1]} features, model has {self.n_features_in_}"
            )
        values = np.nan_to_num(values)
        self.scaler_.partial_fit(values)
        self.sgd_.partial_fit(self.scaler_.transform(values), target, classes=self.classes_)
        self.n_seen_ += len(values)
        return self

    def fit(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray) -> OnlinePropensity:
        """Reset and learn from one batch (same as a fresh ``partial_fit``)."""
        for name in ("sgd_", "scaler_", "n_seen_"):
            if hasattr(self, name):
                delattr(self, name)
        return self.partial_fit(X, y)

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, 2)."""
        check_is_fitted(self, "sgd_")
        values = np.nan_to_num(np.asarray(X, dtype=float))
        if values.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {values.shape[1]} features, model has {self.n_features_in_}")
        return np.asarray(self.sgd_.predict_proba(self.scaler_.transform(values)))

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
