"""Treatment effects per segment from randomised data, and uplift models to find responders.

* :func:`treatment_effects` — ATE with CIs of every treatment arm vs control, overall or
  per segment (any column, e.g. gender, channel or a history quantile).
* :class:`TLearner` — two-model uplift: one classifier on treated, one on control users;
  uplift = P(y|treated, x) - P(y|control, x).
* :func:`qini_curve`, :func:`qini_coefficient`, :func:`uplift_at_k` — held-out evaluation.
* :func:`hillstrom_report` — all of the above on the Hillstrom e-mail experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split

from microseg.errors import MicrosegError, NotFoundError, did_you_mean
from microseg.experiments.stats import SufficientStats, lift, two_proportion_ztest, welch_ttest


def _need(df: pd.DataFrame, cols: Sequence[str]) -> None:
    for c in cols:
        if c not in df.columns:
            raise MicrosegError(f"column {c!r} not found{did_you_mean(c, map(str, df.columns))}")


def arm_summary(df: pd.DataFrame, arm_col: str, outcomes: Sequence[str]) -> pd.DataFrame:
    """Users and mean of every outcome per arm."""
    _need(df, [arm_col, *outcomes])
    out = df.groupby(arm_col, observed=True)[list(outcomes)].agg(["mean"])
    out.columns = [
        f"{c}_rate" if set(df[c].unique()) <= {0, 1} else f"{c}_mean" for c, _ in out.columns
    ]
    out.insert(0, "n", df.groupby(arm_col, observed=True).size())
    return out.reset_index()


def treatment_effects(
    df: pd.DataFrame,
    arm_col: str,
    control: str,
    outcomes: Sequence[str],
    by: str | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Average treatment effect of each arm vs ``control`` for each outcome (and segment).

    0/1 outcomes use the two-proportion z test; others Welch's t test. Rows whose data are
    degenerate carry an ``error`` code instead of raising.
    """
    _need(df, [arm_col, *outcomes] + ([by] if by else []))
    arms = [a for a in pd.unique(df[arm_col]) if a != control]
    if control not in set(df[arm_col]):
        raise MicrosegError(
            f"control arm {control!r} not found{did_you_mean(control, map(str, arms))}"
        )
    groups = [(None, df)] if by is None else list(df.groupby(by, observed=True, sort=True))
    rows: list[dict[str, Any]] = []
    for seg, g in groups:
        ctrl = g[g[arm_col] == control]
        for arm in arms:
            t = g[g[arm_col] == arm]
            for y in outcomes:
                binary = set(df[y].unique()) <= {0, 1}
                st = SufficientStats.from_values(t[y].to_numpy(float))
                sc = SufficientStats.from_values(ctrl[y].to_numpy(float))
                lr = lift(st, sc, confidence=confidence, binary=binary)
                test = two_proportion_ztest(st, sc) if binary else welch_ttest(st, sc)
                err = lr.error or test.error
                row: dict[str, Any] = {} if by is None else {by: seg}
                row.update(
                    treatment=arm,
                    outcome=y,
                    n_treatment=st.n,
                    n_control=sc.n,
                    mean_treatment=st.mean,
                    mean_control=sc.mean,
                    ate=lr.abs_lift,
                    ci_low=lr.abs_ci[0],
                    ci_high=lr.abs_ci[1],
                    rel_lift=lr.rel_lift,
                    p_value=test.p_value,
                    error=err.value if err else "",
                )
                rows.append(row)
    return pd.DataFrame(rows)


class TLearner:
    """Two-model uplift estimator (scikit-learn conventions).

    Parameters: ``estimator`` — a classifier with ``predict_proba`` (default: histogram
    gradient boosting), cloned for the treated and control models; ``random_state``.
    """

    def __init__(
        self, *, estimator: BaseEstimator | None = None, random_state: int | None = None
    ) -> None:
        self.estimator = estimator
        self.random_state = random_state

    def fit(self, X: pd.DataFrame | np.ndarray, treatment: np.ndarray, y: np.ndarray) -> TLearner:
        t = np.asarray(treatment).astype(bool)
        yy = np.asarray(y)
        if len(t) != len(yy) or len(t) != len(X):
            raise ValueError(f"X, treatment and y lengths differ: {len(X)}, {len(t)}, {len(yy)}")
        if t.all() or not t.any():
            raise ValueError("need both treated and control rows")
        base = self.estimator or HistGradientBoostingClassifier(
            max_iter=150,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=200,
            random_state=self.random_state,
        )
        Xa = np.asarray(X, dtype=float)
        self.model_t_ = clone(base).fit(Xa[t], yy[t])
        self.model_c_ = clone(base).fit(Xa[~t], yy[~t])
        return self

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Estimated uplift P(y=1|treated,x) - P(y=1|control,x)."""
        if not hasattr(self, "model_t_"):
            raise ValueError("TLearner is not fitted; call fit first")
        Xa = np.asarray(X, dtype=float)
        return self.model_t_.predict_proba(Xa)[:, 1] - self.model_c_.predict_proba(Xa)[:, 1]


class ClassTransformation:
    """Class-transformation uplift (Jaskowski & Jaroszewicz, 2012).

    With ``z = y·t + (1-y)(1-t)`` and treatment probability ``p``, the uplift is
    ``2 P(z=1|x) - 1`` under a 50/50 split; unequal splits are reweighted to a balanced design
    before fitting. One classifier instead of two.
    """

    def __init__(
        self, *, estimator: BaseEstimator | None = None, random_state: int | None = None
    ) -> None:
        self.estimator = estimator
        self.random_state = random_state

    def fit(
        self, X: pd.DataFrame | np.ndarray, treatment: np.ndarray, y: np.ndarray
    ) -> ClassTransformation:
        t = np.asarray(treatment).astype(bool)
        yy = np.asarray(y).astype(bool)
        if len(t) != len(yy) or len(t) != len(X):
            raise ValueError(f"X, treatment and y lengths differ: {len(X)}, {len(t)}, {len(yy)}")
        if t.all() or not t.any():
            raise ValueError("need both treated and control rows")
        if not set(np.unique(np.asarray(y))) <= {0, 1}:
            raise ValueError("class transformation needs a 0/1 outcome")
        z = (yy & t) | (~yy & ~t)
        p = t.mean()
        weight = np.where(t, 0.5 / p, 0.5 / (1 - p))
        base = self.estimator or HistGradientBoostingClassifier(
            max_iter=150,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=200,
            random_state=self.random_state,
        )
        self.model_ = clone(base).fit(
            np.asarray(X, dtype=float), z.astype(int), sample_weight=weight
        )
        return self

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Estimated uplift ``2 P(z=1|x) - 1``."""
        if not hasattr(self, "model_"):
            raise ValueError("ClassTransformation is not fitted; call fit first")
        return 2 * self.model_.predict_proba(np.asarray(X, dtype=float))[:, 1] - 1


def qini_curve(
    uplift: np.ndarray, treatment: np.ndarray, y: np.ndarray, points: int = 101
) -> pd.DataFrame:
    """Qini curve: ``Q(n) = Y_t(n) - Y_c(n) · N_t(n)/N_c(n)`` over the top-n users by score.

    Columns: ``fraction`` (share of users targeted), ``qini`` (incremental responders),
    ``random`` (the straight line of random targeting).
    """
    u, t, yy = np.asarray(uplift, float), np.asarray(treatment).astype(bool), np.asarray(y, float)
    order = np.argsort(-u, kind="mergesort")
    t, yy = t[order], yy[order]
    nt, nc = np.cumsum(t), np.cumsum(~t)
    yt, yc = np.cumsum(yy * t), np.cumsum(yy * ~t)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(nc > 0, yt - yc * nt / np.maximum(nc, 1), yt)
    n = len(u)
    idx = np.unique(np.linspace(0, n - 1, points).round().astype(int))
    frac = (idx + 1) / n
    return pd.DataFrame(
        {
            "fraction": np.r_[0.0, frac],
            "qini": np.r_[0.0, q[idx]],
            "random": np.r_[0.0, frac * q[-1]],
        }
    )


def qini_coefficient(uplift: np.ndarray, treatment: np.ndarray, y: np.ndarray) -> float:
    """Area between the Qini curve and the random line, per user (trapezoid rule).

    Positive when the scores rank responders to treatment first; ~0 for random scores.
    """
    c = qini_curve(uplift, treatment, y)
    gap = (c["qini"] - c["random"]).to_numpy() / len(np.asarray(uplift))
    x = c["fraction"].to_numpy()
    return float(((gap[1:] + gap[:-1]) / 2 * np.diff(x)).sum())


def uplift_at_k(uplift: np.ndarray, treatment: np.ndarray, y: np.ndarray, k: float = 0.3) -> float:
    """Response rate of treated minus control among the top ``k`` share by predicted uplift."""
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    u, t, yy = np.asarray(uplift, float), np.asarray(treatment).astype(bool), np.asarray(y, float)
    top = np.argsort(-u, kind="mergesort")[: max(1, round(k * len(u)))]
    tt, yt = t[top], yy[top]
    if tt.all() or not tt.any():
        return float("nan")
    return float(yt[tt].mean() - yt[~tt].mean())


# --------------------------------------------------------------------------- Hillstrom

HILLSTROM_CONTROL = "No E-Mail"
HILLSTROM_OUTCOMES = ("visit", "conversion", "spend")


def load_hillstrom(path: str | Path) -> pd.DataFrame:
    """Hillstrom e-mail experiment, with a ``history_quartile`` column added."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"Hillstrom data not found: {p}")
    df = pd.read_csv(p)
    df["history_quartile"] = pd.qcut(df["history"], 4, labels=["Q1", "Q2", "Q3", "Q4"])
    df["gender_bought"] = np.select(
        [(df.mens == 1) & (df.womens == 1), df.mens == 1, df.womens == 1],
        ["both", "mens", "womens"],
        "none",
    )
    return df


def hillstrom_features(df: pd.DataFrame) -> pd.DataFrame:
    """Numeric features for uplift models (pre-treatment columns only)."""
    base = df[["recency", "history", "mens", "womens", "newbie"]].astype(float)
    dummies = pd.get_dummies(df[["zip_code", "channel"]], dtype=float)
    return pd.concat([base, dummies], axis=1)


def hillstrom_report(
    path: str | Path,
    treatment: str = "Womens E-Mail",
    outcome: str = "visit",
    test_size: float = 0.3,
    random_state: int = 0,
) -> dict[str, Any]:
    """Per-arm rates, ATEs (overall and per segment) and a held-out T-learner evaluation."""
    df = load_hillstrom(path)
    effects = {
        "overall": treatment_effects(df, "segment", HILLSTROM_CONTROL, HILLSTROM_OUTCOMES),
        **{
            by: treatment_effects(df, "segment", HILLSTROM_CONTROL, [outcome], by=by)
            for by in ("gender_bought", "channel", "zip_code", "history_quartile", "newbie")
        },
    }
    sub = df[df["segment"].isin([treatment, HILLSTROM_CONTROL])]
    X = hillstrom_features(sub)
    t = (sub["segment"] == treatment).to_numpy()
    y = sub[outcome].to_numpy()
    Xtr, Xte, ttr, tte, ytr, yte = train_test_split(
        X, t, y, test_size=test_size, random_state=random_state, stratify=t
    )
    model = TLearner(random_state=random_state).fit(Xtr, ttr, ytr)
    u = model.predict(Xte)
    rng = np.random.default_rng(random_state)
    return {
        "arms": arm_summary(df, "segment", HILLSTROM_OUTCOMES),
        "effects": effects,
        "model": model,
        "qini": qini_coefficient(u, tte, yte),
        "qini_random": qini_coefficient(rng.random(len(u)), tte, yte),
        "uplift_at_30": uplift_at_k(u, tte, yte, 0.3),
        "uplift_overall_test": uplift_at_k(u, tte, yte, 1.0),
        "curve": qini_curve(u, tte, yte),
    }
