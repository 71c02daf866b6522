"""Sample size, power and minimum detectable effect before an experiment starts.

Proportions use Cohen's arcsine effect size ``h = 2 asin(sqrt p2) - 2 asin(sqrt p1)`` and
means use ``d = delta / sd``; both use the two-sample normal power function of statsmodels'
``NormalIndPower`` (including the far tail for two-sided tests), so every number matches
``statsmodels`` to solver precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import optimize, stats

from microseg.errors import MicrosegError


def proportion_effect_size(p_treatment: float, p_control: float) -> float:
    """Cohen's h (same as ``statsmodels.stats.proportion.proportion_effectsize``)."""
    _check_prob(p_treatment, "p_treatment")
    _check_prob(p_control, "p_control")
    return 2 * math.asin(math.sqrt(p_treatment)) - 2 * math.asin(math.sqrt(p_control))


def _check_prob(p: float, name: str) -> None:
    if not 0 <= p <= 1:
        raise ValueError(f"{name} must be within [0, 1], got {p!r}")


def _crit(alpha: float, alternative: str) -> float:
    if alternative == "two-sided":
        return float(stats.norm.isf(alpha / 2))
    if alternative in ("larger", "smaller"):
        return float(stats.norm.isf(alpha))
    raise ValueError(f"alternative must be 'two-sided', 'larger' or 'smaller', got {alternative!r}")


def power(
    effect_size: float,
    nobs1: float,
    alpha: float = 0.05,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> float:
    """Power of a two-sample z test (``NormalIndPower().power``)."""
    if nobs1 <= 0 or ratio <= 0:
        raise ValueError(f"nobs1 and ratio must be positive, got nobs1={nobs1!r}, ratio={ratio!r}")
    nobs = 1.0 / (1.0 / nobs1 + 1.0 / (nobs1 * ratio))
    crit = _crit(alpha, alternative)
    d = effect_size * math.sqrt(nobs)
    if alternative == "two-sided":
        return float(stats.norm.sf(crit - d) + stats.norm.cdf(-crit - d))
    if alternative == "larger":
        return float(stats.norm.sf(crit - d))
    return float(stats.norm.cdf(-crit - d))


def solve_nobs1(
    effect_size: float,
    alpha: float = 0.05,
    power_target: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> float:
    """Users needed in the first (control) arm; the other arm gets ``ratio`` times as many."""
    if effect_size == 0:
        raise ValueError("effect_size must be non-zero")
    if not 0 < power_target < 1 or not 0 < alpha < 1:
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha!r}, {power_target!r}")
    es = abs(effect_size) if alternative == "two-sided" else effect_size

    def gap(n: float) -> float:
        return power(es, n, alpha, ratio, alternative) - power_target

    # closed-form one-tail start; exact root with brentq (matches statsmodels' solver)
    z = _crit(alpha, alternative) + float(stats.norm.ppf(power_target))
    start = (z / abs(es)) ** 2 * (1 + 1 / ratio)
    lo, hi = max(start / 4, 1e-6), start * 4 + 10
    while gap(lo) > 0:
        lo /= 2
    return float(optimize.brentq(gap, lo, hi, xtol=1e-12, rtol=1e-14, maxiter=500))


def solve_effect_size(
    nobs1: float,
    alpha: float = 0.05,
    power_target: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> float:
    """Smallest standardised effect detectable with ``nobs1`` users in the first arm."""

    def gap(es: float) -> float:
        return power(es, nobs1, alpha, ratio, alternative) - power_target

    return float(optimize.brentq(gap, 1e-9, 50.0, xtol=1e-14, rtol=1e-14, maxiter=500))


@dataclass(frozen=True)
class SampleSizePlan:
    """Sample size for a two-arm test."""

    metric: str
    baseline: float
    mde_abs: float
    alpha: float
    power: float
    ratio: float
    n_control: int
    n_treatment: int

    @property
    def n_total(self) -> int:
        return self.n_control + self.n_treatment


def plan_proportion(
    baseline: float,
    mde_abs: float,
    alpha: float = 0.05,
    power_target: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
) -> SampleSizePlan:
    """Users per arm to detect ``baseline -> baseline + mde_abs`` (arcsine method)."""
    target = baseline + mde_abs
    if not 0 < baseline < 1 or not 0 < target < 1:
        raise ValueError(
            f"baseline and baseline+mde must be in (0, 1), got {baseline!r}, {target!r}"
        )
    h = proportion_effect_size(target, baseline)
    n1 = solve_nobs1(h, alpha, power_target, ratio, alternative)
    return SampleSizePlan(
        "proportion",
        baseline,
        mde_abs,
        alpha,
        power_target,
        ratio,
        math.ceil(n1),
        math.ceil(n1 * ratio),
    )


def plan_mean(
    baseline_mean: float,
    sd: float,
    mde_abs: float,
    alpha: float = 0.05,
    power_target: float = 0.8,
    ratio: float = 1.0,
    alternative: str = "two-sided",
    use_t: bool = False,
) -> SampleSizePlan:
    """Users per arm to detect a mean shift of ``mde_abs`` for a metric with std ``sd``.

    ``use_t`` sizes for the (two-sided) t test instead of the normal approximation.
    """
    if sd <= 0:
        raise ValueError(f"sd must be positive, got {sd!r}")
    if use_t:
        if alternative != "two-sided":
            raise ValueError("use_t supports only the two-sided alternative")
        n1 = solve_nobs1_t(mde_abs / sd, alpha, power_target, ratio)
    else:
        n1 = solve_nobs1(mde_abs / sd, alpha, power_target, ratio, alternative)
    return SampleSizePlan(
        "mean",
        baseline_mean,
        mde_abs,
        alpha,
        power_target,
        ratio,
        math.ceil(n1),
        math.ceil(n1 * ratio),
    )


def mde_proportion(
    baseline: float,
    nobs1: float,
    alpha: float = 0.05,
    power_target: float = 0.8,
    ratio: float = 1.0,
) -> float:
    """Absolute upward MDE on a rate given ``nobs1`` control users (inverts Cohen's h)."""
    _check_prob(baseline, "baseline")
    h = solve_effect_size(nobs1, alpha, power_target, ratio)
    angle = math.asin(math.sqrt(baseline)) + h / 2
    if angle >= math.pi / 2:
        return 1.0 - baseline
    return math.sin(angle) ** 2 - baseline


def segment_mde_table(
    segments: pd.DataFrame,
    *,
    size_col: str = "size",
    baseline_col: str = "baseline",
    segment_col: str = "segment",
    traffic: float = 1.0,
    n_arms: int = 2,
    alpha: float = 0.05,
    power_target: float = 0.8,
    max_relative_mde: float = 0.2,
    min_arm_size: int = 100,
) -> pd.DataFrame:
    """Minimum detectable effect for each target segment given its size and baseline rate.

    Each segment's users (times ``traffic``) are split evenly over ``n_arms``. Adds columns
    ``n_per_arm, mde_abs, mde_rel, testable, warning``; a segment is *not testable* when an arm
    would have fewer than ``min_arm_size`` users, the baseline is 0 or 1, or the relative MDE
    exceeds ``max_relative_mde``.
    """
    missing = [c for c in (segment_col, size_col, baseline_col) if c not in segments.columns]
    if missing:
        raise MicrosegError(
            f"segment table lacks column(s) {missing}; has {list(segments.columns)}"
        )
    if n_arms < 2:
        raise ValueError(f"n_arms must be >= 2, got {n_arms}")
    rows = []
    for seg, size, base in segments[[segment_col, size_col, baseline_col]].itertuples(index=False):
        n_arm = math.floor(float(size) * traffic / n_arms)
        warning = ""
        mde_abs = mde_rel = float("nan")
        if n_arm < min_arm_size:
            warning = f"too small to test: {n_arm} users per arm < {min_arm_size}"
        elif not 0 < float(base) < 1:
            warning = f"baseline {base} leaves nothing to detect"
        else:
            mde_abs = mde_proportion(float(base), n_arm, alpha, power_target)
            mde_rel = mde_abs / float(base)
            if mde_rel > max_relative_mde:
                warning = (
                    f"too small to test: detects only a {mde_rel:.0%} relative lift "
                    f"(limit {max_relative_mde:.0%})"
                )
        rows.append(
            {
                segment_col: seg,
                size_col: size,
                baseline_col: base,
                "n_per_arm": n_arm,
                "mde_abs": mde_abs,
                "mde_rel": mde_rel,
                "testable": warning == "",
                "warning": warning,
            }
        )
    return pd.DataFrame(rows)


def power_t(effect_size: float, nobs1: float, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """Two-sided power of the two-sample pooled t test via the noncentral t distribution
    (``statsmodels.stats.power.TTestIndPower().power``)."""
    if nobs1 <= 1 or ratio <= 0:
        raise ValueError(f"nobs1 must be > 1 and ratio positive, got {nobs1!r}, {ratio!r}")
    nobs2 = nobs1 * ratio
    df = nobs1 + nobs2 - 2
    nc = abs(effect_size) * math.sqrt(1.0 / (1.0 / nobs1 + 1.0 / nobs2))
    crit = float(stats.t.isf(alpha / 2, df))
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def solve_nobs1_t(
    effect_size: float, alpha: float = 0.05, power_target: float = 0.8, ratio: float = 1.0
) -> float:
    """Users in the first arm for a two-sided t test (``tt_ind_solve_power``); slightly more
    than the normal approximation for small samples."""
    z = solve_nobs1(effect_size, alpha, power_target, ratio)

    def gap(n: float) -> float:
        return power_t(effect_size, n, alpha, ratio) - power_target

    return float(optimize.brentq(gap, max(1.5, z / 2), z * 2 + 10, xtol=1e-12, rtol=1e-14))
