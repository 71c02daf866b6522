"""Off-policy evaluation (OPE) of a target policy from logged bandit feedback.

Estimators, for logged rows i with reward r_i, logging propensity μ_i = μ(a_i|x_i) and target
probability π_i = π(a_i|x_i), importance weight w_i = π_i / μ_i:

* IPW:    V = mean(w r),              CI from the sample std of w r;
* SNIPW:  V = Σ w r / Σ w,            delta-method CI, std of w (r - V) / mean(w);
* DR:     V = mean(q̂_π(x_i) + w (r - q̂(x_i, a_i))), with a reward model q̂ and its
          expectation under the target policy q̂_π.

:func:`evaluate_obd` applies them to the Open Bandit Dataset sample (ZOZOTOWN), whose logs
carry the true logging propensities of a uniform-random and a Bernoulli-TS policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from microseg.errors import NotFoundError


@dataclass(frozen=True)
class OPEEstimate:
    """A policy-value estimate with a normal confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int

    def covers(self, x: float) -> bool:
        return self.ci_low <= x <= self.ci_high


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def _arrays(*xs: np.ndarray | pd.Series) -> list[np.ndarray]:
    arrs = [np.asarray(x, dtype=float) for x in xs]
    n = arrs[0].size
    if any(a.size != n for a in arrs):
        raise ValueError(f"arrays must have equal length, got {[a.size for a in arrs]}")
    if n == 0:
        raise ValueError("no logged rows")
    return arrs


def on_policy(rewards: np.ndarray, confidence: float = 0.95) -> OPEEstimate:
    """The policy's own average reward (its logs), with a normal CI."""
    (r,) = _arrays(rewards)
    se = r.std(ddof=1) / math.sqrt(r.size) if r.size > 1 else float("nan")
    z = _z(confidence)
    return OPEEstimate("on-policy", float(r.mean()), r.mean() - z * se, r.mean() + z * se, r.size)


def ipw(
    rewards: np.ndarray, behavior_p: np.ndarray, target_p: np.ndarray, confidence: float = 0.95
) -> OPEEstimate:
    """Inverse propensity weighting (Horvitz-Thompson) estimate."""
    r, mu, pi = _arrays(rewards, behavior_p, target_p)
    if (mu <= 0).any():
        raise ValueError("logging propensities must be positive")
    term = pi / mu * r
    v, se = float(term.mean()), float(term.std(ddof=1) / math.sqrt(term.size))
    z = _z(confidence)
    return OPEEstimate("IPW", v, v - z * se, v + z * se, term.size)


def snipw(
    rewards: np.ndarray, behavior_p: np.ndarray, target_p: np.ndarray, confidence: float = 0.95
) -> OPEEstimate:
    """Self-normalised IPW: lower variance, small bias; CI by the delta method."""
    r, mu, pi = _arrays(rewards, behavior_p, target_p)
    w = pi / mu
    if w.sum() <= 0:
        return OPEEstimate("SNIPW", float("nan"), float("nan"), float("nan"), r.size)
    v = float((w * r).sum() / w.sum())
    se = float(np.sqrt(np.mean((w * (r - v)) ** 2) / r.size) / w.mean())
    z = _z(confidence)
    return OPEEstimate("SNIPW", v, v - z * se, v + z * se, r.size)


def doubly_robust(
    rewards: np.ndarray,
    behavior_p: np.ndarray,
    target_p: np.ndarray,
    q_logged: np.ndarray,
    q_target: np.ndarray,
    confidence: float = 0.95,
) -> OPEEstimate:
    """Doubly robust estimate with reward model values ``q_logged`` = q̂(x_i, a_i) and
    ``q_target`` = Σ_a π(a|x_i) q̂(x_i, a)."""
    r, mu, pi, ql, qt = _arrays(rewards, behavior_p, target_p, q_logged, q_target)
    term = qt + pi / mu * (r - ql)
    v, se = float(term.mean()), float(term.std(ddof=1) / math.sqrt(term.size))
    z = _z(confidence)
    return OPEEstimate("DR", v, v - z * se, v + z * se, term.size)


# --------------------------------------------------------------------------- Open Bandit Dataset


def load_obd_log(root: str | Path, policy: str, campaign: str = "all") -> pd.DataFrame:
    """One OBD log: ``{root}/{policy}/{campaign}/{campaign}.csv.gz``."""
    path = Path(root) / policy / campaign / f"{campaign}.csv.gz"
    if not path.exists():
        raise NotFoundError(f"Open Bandit log not found: {path}")
    return pd.read_csv(path, index_col=0, usecols=range(7))


def action_distribution(log: pd.DataFrame, n_items: int, smoothing: float = 0.0) -> np.ndarray:
    """Empirical (position, item) serving probabilities of the policy that wrote ``log``.

    BTS on ZOZOTOWN is not contextual, so its marginal action distribution per position over
    the logging week — estimated from its own log — defines the target policy.
    Returns an array of shape (3, n_items); each row sums to one.
    """
    counts = np.zeros((3, n_items))
    np.add.at(counts, (log["position"].to_numpy() - 1, log["item_id"].to_numpy()), 1.0)
    counts += smoothing
    return counts / counts.sum(axis=1, keepdims=True)


def _reward_model(log: pd.DataFrame, n_items: int, prior_strength: float = 200.0) -> np.ndarray:
    """Per-(position, item) CTR shrunk towards the position CTR (Beta prior)."""
    q = np.zeros((3, n_items))
    for pos in (1, 2, 3):
        g = log[log["position"] == pos]
        base = g["click"].mean() if len(g) else 0.0
        n = np.bincount(g["item_id"], minlength=n_items)
        c = np.bincount(g["item_id"], weights=g["click"], minlength=n_items)
        q[pos - 1] = (c + prior_strength * base) / (n + prior_strength)
    return q


def evaluate_obd(
    root: str | Path,
    campaign: str = "all",
    target: str = "bts",
    logged: str = "random",
    confidence: float = 0.95,
) -> dict[str, OPEEstimate]:
    """Estimate the ``target`` policy's CTR from the ``logged`` policy's data.

    Returns IPW, SNIPW and DR estimates plus the ``on-policy`` CTR from the target's own log
    (the ground truth the estimates should cover). ``target='random'`` evaluates the uniform
    policy (π = 1/#items) from BTS logs with their true propensities; ``target='bts'`` uses the
    empirical BTS action distribution (:func:`action_distribution`) as π.
    """
    log = load_obd_log(root, logged, campaign)
    target_log = load_obd_log(root, target, campaign)
    n_items = int(max(log["item_id"].max(), target_log["item_id"].max())) + 1
    if target == "random":
        pi_table = np.full((3, n_items), 1.0 / n_items)
    else:
        pi_table = action_distribution(target_log, n_items)
    pos = log["position"].to_numpy() - 1
    item = log["item_id"].to_numpy()
    r = log["click"].to_numpy(float)
    mu = log["propensity_score"].to_numpy(float)
    pi = pi_table[pos, item]
    q = _reward_model(log, n_items)
    q_logged = q[pos, item]
    q_target = (pi_table * q).sum(axis=1)[pos]
    return {
        "on-policy": on_policy(target_log["click"].to_numpy(float), confidence),
        "IPW": ipw(r, mu, pi, confidence),
        "SNIPW": snipw(r, mu, pi, confidence),
        "DR": doubly_robust(r, mu, pi, q_logged, q_target, confidence),
        "logged": on_policy(r, confidence),
    }
