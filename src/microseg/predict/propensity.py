"""Propensity models (M1–M5): logistic regression, random forest, LightGBM.

``PropensityModel`` is a scikit-learn classifier with data-sufficiency guardrails and optional
class balancing (SMOTE or class weights). ``evaluate`` gives ROC-AUC, PR-AUC, precision /
recall at a threshold, a calibration curve and the top-fraction (VIP) threshold;
``cross_validate`` runs stratified K-fold; ``explain`` gives SHAP global importances and
per-profile top reasons; ``adapt_to_segment`` warm-starts a small-segment model (M3).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import calibration_curve
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "ALGORITHMS",
    "Evaluation",
    "InsufficientDataWarning",
    "PropensityModel",
    "SegmentAdaptation",
    "adapt_to_segment",
    "cross_validate",
    "evaluate",
    "explain",
    "tune_threshold",
]

ALGORITHMS = ("logistic", "random_forest", "lightgbm")
BALANCING = ("none", "class_weight", "smote")


class InsufficientDataWarning(UserWarning):
    """Fewer positives or negatives than the guardrail asks for; estimates are unreliable."""


def _class_counts(y: np.ndarray) -> tuple[int, int]:
    pos = int(np.sum(y == 1))
    return pos, int(len(y) - pos)


def check_sufficiency(
    y: np.ndarray | pd.Series, *, min_class_count: int, on_insufficient: str
) -> tuple[int, int]:
    """Refuse (``ValueError``) or warn when either class has fewer than ``min_class_count`` rows."""
    arr = np.asarray(y)
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"target must be binary 0/1, got values {sorted(values)[:10]}")
    pos, neg = _class_counts(arr)
    if min(pos, neg) < min_class_count:
        msg = (
            f"only {pos} positives and {neg} negatives (guardrail: at least {min_class_count} of each); "
            "collect more data or lower min_class_count knowingly"
        )
        if on_insufficient == "raise" or min(pos, neg) < 2:
            raise ValueError(msg)
        warnings.warn(msg, InsufficientDataWarning, stacklevel=3)
    return pos, neg


class PropensityModel(ClassifierMixin, BaseEstimator):
    """Binary propensity classifier with guardrails.

    Parameters
    ----------
    algorithm : {"logistic", "random_forest", "lightgbm"}
    balance : {"none", "class_weight", "smote"}
        SMOTE oversamples the minority class inside ``fit`` only (never the evaluation data).
    n_estimators : int
        Trees for random forest / LightGBM.
    learning_rate : float
        LightGBM learning rate.
    C : float
        Inverse L2 strength for logistic regression.
    min_class_count : int
        Guardrail: minimum positives and negatives (default 100).
    on_insufficient : {"raise", "warn"}
    random_state : int | None
    """

    def __init__(
        self,
        *,
        algorithm: str = "lightgbm",
        balance: str = "none",
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        C: float = 1.0,
        min_class_count: int = 100,
        on_insufficient: str = "raise",
        random_state: int | None = 0,
    ) -> None:
        self.algorithm = algorithm
        self.balance = balance
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.C = C
        self.min_class_count = min_class_count
        self.on_insufficient = on_insufficient
        self.random_state = random_state

    def _estimator(self) -> Any:
        weight = "balanced" if self.balance == "class_weight" else None
        if self.algorithm == "logistic":
            return LogisticRegression(
                C=self.C, class_weight=weight, max_iter=2000, random_state=self.random_state
            )
        if self.algorithm == "random_forest":
            return RandomForestClassifier(
                n_estimators=self.n_estimators,
                min_samples_leaf=5,
                class_weight=weight,
                n_jobs=-1,
                random_state=self.random_state,
            )
        from lightgbm import LGBMClassifier

        return LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=31,
            min_child_samples=20,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            class_weight=weight,
            random_state=self.random_state,
            n_jobs=2,
            verbose=-1,
        )

    def fit(self, X: pd.DataFrame | np.ndarray, y: pd.Series | np.ndarray) -> PropensityModel:
        """Validate guardrails, optionally balance, fit; returns self."""
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.balance not in BALANCING:
            raise ValueError(f"balance must be one of {BALANCING}, got {self.balance!r}")
        if self.on_insufficient not in ("raise", "warn"):
            raise ValueError(
                f"on_insufficient must be 'raise' or 'warn', got {self.on_insufficient!r}"
            )
        frame = pd.DataFrame(X)
        target = np.asarray(y).astype(int)
        if len(frame) != len(target):
            raise ValueError(f"X has {len(frame)} rows but y has {len(target)}")
        self.n_positive_, self.n_negative_ = check_sufficiency(
            target, min_class_count=self.min_class_count, on_insufficient=self.on_insufficient
        )
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = frame.shape[1]
        self.classes_ = np.array([0, 1])
        values = frame.to_numpy(dtype=float)
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(values)
        values = self.imputer_.transform(values)
        self.scaler_ = StandardScaler().fit(values) if self.algorithm == "logistic" else None
        if self.scaler_ is not None:
            values = self.scaler_.transform(values)
        if self.balance == "smote":
            from imblearn.over_sampling import SMOTE

            k = max(1, min(5, min(self.n_positive_, self.n_negative_) - 1))
            values, target = SMOTE(k_neighbors=k, random_state=self.random_state).fit_resample(
                values, target
            )
        self.estimator_ = self._estimator()
        self.estimator_.fit(np.ascontiguousarray(values), target)
        return self

    def transform_features(self, X: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """The imputed (and, for logistic, scaled) matrix the inner estimator sees."""
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(self._matrix(X), columns=self.feature_names_in_, index=index)

    def _matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        frame = pd.DataFrame(X)
        if frame.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {frame.shape[1]} features, model was fitted with {self.n_features_in_}"
            )
        if isinstance(X, pd.DataFrame):
            names = [str(c) for c in X.columns]
            if names != list(self.feature_names_in_):
                raise ValueError(
                    f"feature names {names} differ from fitted {list(self.feature_names_in_)}"
                )
        values = self.imputer_.transform(frame.to_numpy(dtype=float))
        if self.scaler_ is not None:
            values = self.scaler_.transform(values)
        return np.ascontiguousarray(values)

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, 2)."""
        return np.asarray(self.estimator_.predict_proba(self._matrix(X)))

    def decision_function(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Log-odds of the positive class."""
        p = np.clip(self.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
        return np.asarray(np.log(p / (1 - p)))

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def score_profiles(self, X: pd.DataFrame) -> pd.Series:
        """Positive-class probability per row, keeping ``X``'s index (profile ids)."""
        return pd.Series(self.predict_proba(X)[:, 1], index=X.index, name="score")


@dataclass(frozen=True)
class Evaluation:
    """Held-out quality of a propensity score."""

    n: int
    positives: int
    roc_auc: float
    pr_auc: float
    brier: float
    threshold: float
    precision: float
    recall: float
    top_fraction: float
    top_threshold: float
    top_precision: float
    top_recall: float
    lift_at_top: float
    calibration: pd.DataFrame = field(repr=False)

    def as_dict(self) -> dict[str, float]:
        """Scalar metrics (for the registry)."""
        return {k: v for k, v in self.__dict__.items() if k != "calibration"}


def evaluate(
    y_true: np.ndarray | pd.Series,
    scores: np.ndarray | pd.Series,
    *,
    threshold: float = 0.5,
    top_fraction: float = 0.1,
    n_bins: int = 10,
) -> Evaluation:
    """ROC-AUC, PR-AUC, Brier, precision/recall at ``threshold`` and at the top ``top_fraction``.

    The top-fraction threshold is the score quantile that flags that share of profiles
    (e.g. top 10 % = VIP); the calibration curve uses quantile bins.
    """
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(y) != len(s) or len(y) == 0:
        raise ValueError(f"y_true ({len(y)}) and scores ({len(s)}) must be equal, non-empty")
    if len(np.unique(y)) < 2:
        raise ValueError("evaluation needs both classes in y_true")
    if not 0 < top_fraction < 1:
        raise ValueError(f"top_fraction must be in (0, 1), got {top_fraction}")
    pred = (s >= threshold).astype(int)
    top_thr = float(np.quantile(s, 1 - top_fraction))
    top = s >= top_thr
    base = y.mean()
    frac_true, frac_pred = calibration_curve(
        y, np.clip(s, 0, 1), n_bins=n_bins, strategy="quantile"
    )
    top_precision = float(y[top].mean()) if top.any() else 0.0
    return Evaluation(
        n=len(y),
        positives=int(y.sum()),
        roc_auc=float(roc_auc_score(y, s)),
        pr_auc=float(average_precision_score(y, s)),
        brier=float(brier_score_loss(y, np.clip(s, 0, 1))),
        threshold=threshold,
        precision=float(precision_score(y, pred, zero_division=0)),
        recall=float(recall_score(y, pred, zero_division=0)),
        top_fraction=top_fraction,
        top_threshold=top_thr,
        top_precision=top_precision,
        top_recall=float(y[top].sum() / max(y.sum(), 1)),
        lift_at_top=top_precision / base if base > 0 else float("nan"),
        calibration=pd.DataFrame({"mean_predicted": frac_pred, "fraction_positive": frac_true}),
    )


def tune_threshold(
    y_true: np.ndarray | pd.Series,
    scores: np.ndarray | pd.Series,
    *,
    min_precision: float | None = None,
) -> dict[str, float]:
    """Pick a score threshold on validation data.

    Without ``min_precision``: the threshold maximising F1. With it: the lowest threshold whose
    precision reaches ``min_precision`` (highest recall at that precision). Returns threshold,
    precision, recall, f1 and the share of profiles flagged.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=float)
    if len(np.unique(y)) < 2:
        raise ValueError("threshold tuning needs both classes in y_true")
    precision, recall, thresholds = precision_recall_curve(y, s)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0
    )
    if min_precision is None:
        i = int(np.argmax(f1))
    else:
        ok = np.flatnonzero(precision >= min_precision)
        if not len(ok):
            raise ValueError(
                f"no threshold reaches precision {min_precision}; best is {precision.max():.3f}"
            )
        i = int(ok[0])
    thr = float(thresholds[i])
    return {
        "threshold": thr,
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "f1": float(f1[i]),
        "flagged_share": float(np.mean(s >= thr)),
    }


def cross_validate(
    model: PropensityModel,
    X: pd.DataFrame,
    y: pd.Series,
    *,
    n_splits: int = 5,
    random_state: int | None = 0,
) -> dict[str, Any]:
    """Stratified K-fold ROC-AUC and PR-AUC (the model is cloned per fold)."""
    if n_splits < 2:
        raise ValueError(f"n_splits must be >= 2, got {n_splits}")
    target = np.asarray(y).astype(int)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    aucs, pr_aucs = [], []
    for train_idx, test_idx in folds.split(X, target):
        fold_model = clone(model).fit(X.iloc[train_idx], target[train_idx])
        s = fold_model.predict_proba(X.iloc[test_idx])[:, 1]
        aucs.append(float(roc_auc_score(target[test_idx], s)))
        pr_aucs.append(float(average_precision_score(target[test_idx], s)))
    return {
        "roc_auc": aucs,
        "pr_auc": pr_aucs,
        "roc_auc_mean": float(np.mean(aucs)),
        "roc_auc_std": float(np.std(aucs)),
        "pr_auc_mean": float(np.mean(pr_aucs)),
    }


@dataclass(frozen=True)
class Explanation:
    """SHAP values: global mean |SHAP| per feature and per-profile contributions."""

    global_importance: pd.Series
    values: pd.DataFrame
    base_value: float

    def top_reasons(self, profile_id: Any, n: int = 3) -> list[tuple[str, float]]:
        """The ``n`` features pushing this profile's score most (signed log-odds contributions)."""
        row = self.values.loc[profile_id]
        order = row.abs().sort_values(ascending=False).index[:n]
        return [(str(k), float(row[k])) for k in order]


def explain(
    model: PropensityModel, X: pd.DataFrame, *, max_rows: int = 2000, random_state: int | None = 0
) -> Explanation:
    """SHAP explanations (log-odds scale) for up to ``max_rows`` rows of ``X``."""
    import shap

    check_is_fitted(model, "estimator_")
    sample = X if len(X) <= max_rows else X.sample(max_rows, random_state=random_state)
    Z = model.transform_features(sample)
    est = model.estimator_
    if model.algorithm == "logistic":
        explainer = shap.LinearExplainer(est, Z.to_numpy())
        raw = explainer.shap_values(Z.to_numpy())
    else:
        explainer = shap.TreeExplainer(est)
        with warnings.catch_warnings():
            # shap notes that LightGBM binary output is a list; handled below.
            warnings.filterwarnings(
                "ignore", message="LightGBM binary classifier", category=UserWarning
            )
            raw = explainer.shap_values(Z.to_numpy())
    vals = np.asarray(raw[1] if isinstance(raw, list) else raw)
    if vals.ndim == 3:
        vals = vals[:, :, 1]
    base = np.ravel(np.asarray(explainer.expected_value, dtype=float))
    values = pd.DataFrame(vals, index=sample.index, columns=[str(c) for c in Z.columns])
    importance = values.abs().mean().sort_values(ascending=False).rename("mean_abs_shap")
    return Explanation(importance, values, float(base[-1]))


@dataclass(frozen=True)
class SegmentAdaptation:
    """Result of adapting the population model to a segment."""

    strategy: str  # "population" | "recalibrated" | "warm_started"
    message: str
    n_positive: int
    n_negative: int
    model: Any

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Positive-class probability under the adapted model."""
        return np.asarray(self.model.predict_proba(X)[:, 1])


class _Recalibrated:
    """Population log-odds passed through a segment-specific logistic (intercept + slope)."""

    def __init__(self, population: PropensityModel, calibrator: LogisticRegression) -> None:
        self.population = population
        self.calibrator = calibrator

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        z = self.population.decision_function(X).reshape(-1, 1)
        return np.asarray(self.calibrator.predict_proba(z))


class _WarmStarted:
    """LightGBM boosting continued on segment data from the population booster."""

    def __init__(self, population: PropensityModel, booster: Any) -> None:
        self.population = population
        self.booster = booster

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.booster.predict_proba(self.population._matrix(X)))


def adapt_to_segment(
    population: PropensityModel,
    X: pd.DataFrame,
    y: pd.Series | np.ndarray,
    *,
    min_recalibrate: int = 20,
    min_warm_start: int = 100,
    extra_trees: int = 50,
) -> SegmentAdaptation:
    """Warm-start a segment model from the population model, as far as the data allows.

    * fewer than ``min_recalibrate`` positives or negatives: keep the population model and say
      the data is too thin;
    * fewer than ``min_warm_start``: recalibrate the population log-odds (2 parameters);
    * otherwise: continue boosting ``extra_trees`` LightGBM trees on the segment from the
      population booster (logistic / forest populations are recalibrated instead).
    """
    check_is_fitted(population, "estimator_")
    target = np.asarray(y).astype(int)
    pos, neg = _class_counts(target)
    smallest = min(pos, neg)
    if smallest < min_recalibrate:
        return SegmentAdaptation(
            "population",
            f"segment data too thin ({pos} positives, {neg} negatives; need {min_recalibrate} of each "
            "to adapt): using the population model unchanged",
            pos,
            neg,
            population,
        )
    if smallest >= min_warm_start and population.algorithm == "lightgbm":
        from lightgbm import LGBMClassifier

        booster = LGBMClassifier(
            n_estimators=extra_trees,
            learning_rate=population.learning_rate / 2,
            num_leaves=15,
            min_child_samples=20,
            random_state=population.random_state,
            n_jobs=2,
            verbose=-1,
        )
        booster.fit(population._matrix(X), target, init_model=population.estimator_.booster_)
        return SegmentAdaptation(
            "warm_started",
            f"continued boosting {extra_trees} trees on {pos} positives / {neg} negatives",
            pos,
            neg,
            _WarmStarted(population, booster),
        )
    z = population.decision_function(X).reshape(-1, 1)
    calibrator = LogisticRegression(C=1.0).fit(z, target)
    return SegmentAdaptation(
        "recalibrated",
        f"recalibrated population log-odds on {pos} positives / {neg} negatives "
        f"(slope {calibrator.coef_[0, 0]:.2f}, intercept {calibrator.intercept_[0]:.2f})",
        pos,
        neg,
        _Recalibrated(population, calibrator),
    )
