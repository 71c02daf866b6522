"""Guards against early stopping: a fixed-horizon gate and the mixture SPRT (mSPRT).

Peeking at a fixed-horizon p-value every day and stopping at the first p < 0.05 inflates the
false-positive rate far above 5 %. Two remedies are offered:

* :func:`horizon_gate` — refuse a final verdict until every arm reached its planned size.
* :func:`msprt` — always-valid p-values (Johari, Pekelis & Walsh, 2017): with a normal
  mixing distribution N(0, τ²) over the true difference θ, the mixture likelihood ratio of
  an estimate θ̂ with variance V is ``Λ = sqrt(V/(V+τ²)) · exp(τ² θ̂² / (2 V (V+τ²)))``;
  ``p_n = min(p_{n-1}, 1/Λ_n)`` may be monitored after every look, and stopping when
  ``p_n < α`` keeps the type-I error at most α.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from microseg.experiments.stats import ErrorCode, SufficientStats


@dataclass(frozen=True)
class HorizonStatus:
    """Whether the planned sample size is reached, so a fixed-horizon verdict is allowed."""

    reached: bool
    planned_per_arm: int
    smallest_arm: int
    fraction: float
    message: str


def horizon_gate(arms: Sequence[SufficientStats], planned_per_arm: int) -> HorizonStatus:
    """Check every arm against the planned per-arm sample size."""
    if planned_per_arm <= 0:
        raise ValueError(f"planned_per_arm must be positive, got {planned_per_arm}")
    smallest = min((s.n for s in arms), default=0)
    frac = smallest / planned_per_arm
    if smallest >= planned_per_arm:
        return HorizonStatus(True, planned_per_arm, smallest, frac, "planned sample size reached")
    return HorizonStatus(
        False,
        planned_per_arm,
        smallest,
        frac,
        f"no final verdict: smallest arm has {smallest} of {planned_per_arm} planned users "
        f"({frac:.0%}); stopping now inflates false positives",
    )


@dataclass(frozen=True)
class MSPRTResult:
    """Always-valid p-values after each look and the first look that crossed ``alpha``."""

    p_values: tuple[float, ...]
    stopped_at: int | None  # index of the first look with p < alpha, None if never
    alpha: float
    tau: float
    error: ErrorCode | None = None

    @property
    def reject(self) -> bool:
        return self.stopped_at is not None


def msprt_lambda(theta_hat: float, variance: float, tau: float) -> float:
    """Mixture likelihood ratio for an estimate with the given variance (normal mixture)."""
    if variance <= 0 or tau <= 0:
        return float("nan")
    s = variance + tau * tau
    return math.sqrt(variance / s) * math.exp(
        tau * tau * theta_hat * theta_hat / (2 * variance * s)
    )


def msprt(
    looks: Sequence[tuple[SufficientStats, SufficientStats]],
    alpha: float = 0.05,
    tau: float | None = None,
) -> MSPRTResult:
    """Always-valid p-values for (treatment, control) cumulative stats at successive looks.

    ``tau`` is the std of the mixing distribution on the absolute difference; by default it is
    a tenth of the pooled metric std at the first valid look (a common practical choice).
    Looks with too little data keep the previous p-value.
    """
    if not looks:
        return MSPRTResult((), None, alpha, float("nan"), ErrorCode.NO_DATA)
    p = 1.0
    ps: list[float] = []
    stopped: int | None = None
    for i, (t, c) in enumerate(looks):
        if t.n >= 2 and c.n >= 2:
            var = t.variance / t.n + c.variance / c.n
            if tau is None and var > 0:
                tau = 0.1 * math.sqrt((t + c).variance)
            if var > 0 and tau:
                lam = msprt_lambda(t.mean - c.mean, var, tau)
                p = min(p, 1.0 / lam) if lam > 0 else p
        ps.append(p)
        if stopped is None and p < alpha:
            stopped = i
    if tau is None:
        return MSPRTResult(tuple(ps), None, alpha, float("nan"), ErrorCode.NO_VARIANCE)
    return MSPRTResult(tuple(ps), stopped, alpha, float(tau))


def msprt_vectorised(theta_hat: np.ndarray, variance: np.ndarray, tau: float) -> np.ndarray:
    """Running always-valid p-values along the last axis (for simulations)."""
    s = variance + tau * tau
    log_lam = 0.5 * np.log(variance / s) + tau * tau * theta_hat**2 / (2 * variance * s)
    p = np.minimum(1.0, np.exp(-log_lam))
    return np.minimum.accumulate(p, axis=-1)
