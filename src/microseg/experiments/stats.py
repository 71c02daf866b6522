"""Frequentist and Bayesian comparison of experiment arms from sufficient statistics.

Every function is pure and works on :class:`SufficientStats` (n, sum, sum of squares), so the
same code serves conversion rates (values 0/1, where ``sum_sq == sum``) and revenue.
Degenerate inputs (no users, zero variance, zero baseline, a single arm) never raise: they
return a result whose ``error`` is an :class:`ErrorCode` and whose numbers are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import special, stats

NAN = float("nan")


class ErrorCode(StrEnum):
    """Why a statistic could not be computed (the result still exists, with NaN numbers)."""

    NO_DATA = "no_data"  # an arm has zero (or one, for variances) users
    SINGLE_ARM = "single_arm"  # fewer than two arms to compare
    NO_VARIANCE = "no_variance"  # every value identical in every arm (e.g. all convert)
    ZERO_BASELINE = "zero_baseline"  # control mean is 0: relative lift undefined
    BAD_INPUT = "bad_input"  # negative counts, sum > n for proportions, ...


@dataclass(frozen=True)
class SufficientStats:
    """n, sum and sum of squares of a metric for one arm."""

    n: int
    sum: float
    sum_sq: float

    @classmethod
    def binary(cls, n: int, conversions: int) -> SufficientStats:
        """Stats of a 0/1 metric: ``conversions`` ones out of ``n``."""
        return cls(int(n), float(conversions), float(conversions))

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> SufficientStats:
        """Stats of raw per-user values."""
        arr = np.asarray(values, dtype=float)
        return cls(int(arr.size), float(arr.sum()), float((arr * arr).sum()))

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n > 0 else NAN

    @property
    def variance(self) -> float:
        """Unbiased sample variance (ddof=1); NaN with fewer than two users."""
        if self.n < 2:
            return NAN
        var = (self.sum_sq - self.sum * self.sum / self.n) / (self.n - 1)
        return max(var, 0.0)

    @property
    def variance_pop(self) -> float:
        """Population variance (ddof=0), the Bernoulli p(1-p) for 0/1 metrics."""
        if self.n < 1:
            return NAN
        return max(self.sum_sq / self.n - self.mean**2, 0.0)

    def __add__(self, other: SufficientStats) -> SufficientStats:
        return SufficientStats(self.n + other.n, self.sum + other.sum, self.sum_sq + other.sum_sq)


def _check(stats_: SufficientStats, binary: bool = False) -> ErrorCode | None:
    if stats_.n < 0 or stats_.sum_sq < 0:
        return ErrorCode.BAD_INPUT
    if binary and not (0 <= stats_.sum <= stats_.n):
        return ErrorCode.BAD_INPUT
    if stats_.n == 0:
        return ErrorCode.NO_DATA
    return None


@dataclass(frozen=True)
class TestResult:
    """A test statistic with its p-value (and degrees of freedom when relevant)."""

    statistic: float = NAN
    p_value: float = NAN
    df: float = NAN
    error: ErrorCode | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LiftResult:
    """Treatment vs control: absolute and relative lift with confidence intervals."""

    control_mean: float = NAN
    treatment_mean: float = NAN
    abs_lift: float = NAN
    abs_ci: tuple[float, float] = (NAN, NAN)
    rel_lift: float = NAN
    rel_ci: tuple[float, float] = (NAN, NAN)
    p_value: float = NAN
    confidence: float = 0.95
    error: ErrorCode | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def two_proportion_ztest(
    treatment: SufficientStats, control: SufficientStats, pooled: bool = True
) -> TestResult:
    """Two-sided two-proportion z test (matches statsmodels ``proportions_ztest``).

    ``pooled=True`` uses the pooled proportion for the standard error, as statsmodels does.
    """
    for s in (treatment, control):
        err = _check(s, binary=True)
        if err:
            return TestResult(error=err)
    p1, p2 = treatment.mean, control.mean
    if pooled:
        p = (treatment.sum + control.sum) / (treatment.n + control.n)
        var = p * (1 - p) * (1 / treatment.n + 1 / control.n)
    else:
        var = p1 * (1 - p1) / treatment.n + p2 * (1 - p2) / control.n
    if var <= 0:
        return TestResult(error=ErrorCode.NO_VARIANCE)
    z = (p1 - p2) / math.sqrt(var)
    return TestResult(statistic=z, p_value=2 * stats.norm.sf(abs(z)))


def chi_square_test(arms: Sequence[SufficientStats], correction: bool = False) -> TestResult:
    """Chi-square test of independence on the arms x (converted, not) table.

    Matches ``scipy.stats.chi2_contingency`` with the same ``correction`` (Yates' continuity
    correction only applies to 2x2 tables, as in scipy).
    """
    if len(arms) < 2:
        return TestResult(error=ErrorCode.SINGLE_ARM)
    for s in arms:
        err = _check(s, binary=True)
        if err:
            return TestResult(error=err)
    obs = np.array([[s.sum, s.n - s.sum] for s in arms], dtype=float)
    col = obs.sum(axis=0)
    if (col == 0).any():
        return TestResult(error=ErrorCode.NO_VARIANCE)
    expected = np.outer(obs.sum(axis=1), col) / obs.sum()
    dof = (obs.shape[0] - 1) * (obs.shape[1] - 1)
    diff = obs - expected
    if correction and dof == 1:
        # Yates: move each observed count up to 0.5 towards its expected count (as scipy).
        diff = diff - np.sign(diff) * np.minimum(np.abs(diff), 0.5)
    chi2 = float((diff**2 / expected).sum())
    return TestResult(statistic=chi2, p_value=float(stats.chi2.sf(chi2, dof)), df=float(dof))


def welch_ttest(treatment: SufficientStats, control: SufficientStats) -> TestResult:
    """Welch's unequal-variance t test (matches ``scipy.stats.ttest_ind(equal_var=False)``)."""
    for s in (treatment, control):
        err = _check(s)
        if err:
            return TestResult(error=err)
        if s.n < 2:
            return TestResult(error=ErrorCode.NO_DATA)
    v1, v2 = treatment.variance / treatment.n, control.variance / control.n
    se2 = v1 + v2
    if se2 <= 0:
        return TestResult(error=ErrorCode.NO_VARIANCE)
    t = (treatment.mean - control.mean) / math.sqrt(se2)
    df = se2**2 / (v1**2 / (treatment.n - 1) + v2**2 / (control.n - 1))
    return TestResult(statistic=t, p_value=float(2 * stats.t.sf(abs(t), df)), df=df)


def lift(
    treatment: SufficientStats,
    control: SufficientStats,
    confidence: float = 0.95,
    binary: bool | None = None,
) -> LiftResult:
    """Absolute and relative lift of ``treatment`` over ``control`` with intervals.

    Absolute: difference of means with the unpooled standard error; a normal quantile for
    0/1 metrics, a Welch t quantile otherwise. Relative: ``mean_t / mean_c - 1`` with a
    delta-method standard error
    ``Var(m_t/m_c) ≈ v_t/(n_t m_c²) + m_t² v_c/(n_c m_c⁴)``.
    ``binary`` defaults to ``sum_sq == sum`` in both arms.
    """
    if binary is None:
        binary = treatment.sum == treatment.sum_sq and control.sum == control.sum_sq
    for s in (treatment, control):
        err = _check(s, binary=binary)
        if err:
            return LiftResult(confidence=confidence, error=err)
    if treatment.n < 2 or control.n < 2:
        return LiftResult(confidence=confidence, error=ErrorCode.NO_DATA)
    mt, mc = treatment.mean, control.mean
    if binary:
        vt, vc = treatment.variance_pop, control.variance_pop
    else:
        vt, vc = treatment.variance, control.variance
    se2 = vt / treatment.n + vc / control.n
    base = LiftResult(control_mean=mc, treatment_mean=mt, abs_lift=mt - mc, confidence=confidence)
    if se2 <= 0:
        return _replace(base, error=ErrorCode.NO_VARIANCE)
    se = math.sqrt(se2)
    if binary:
        q = float(stats.norm.ppf(0.5 + confidence / 2))
        p_value = float(2 * stats.norm.sf(abs(mt - mc) / se))
    else:
        df = se2**2 / (
            (vt / treatment.n) ** 2 / (treatment.n - 1) + (vc / control.n) ** 2 / (control.n - 1)
        )
        q = float(stats.t.ppf(0.5 + confidence / 2, df))
        p_value = float(2 * stats.t.sf(abs(mt - mc) / se, df))
    abs_ci = (mt - mc - q * se, mt - mc + q * se)
    if mc == 0:
        return _replace(base, abs_ci=abs_ci, p_value=p_value, error=ErrorCode.ZERO_BASELINE)
    rel = mt / mc - 1
    rel_se = math.sqrt(vt / (treatment.n * mc**2) + mt**2 * vc / (control.n * mc**4))
    zq = float(stats.norm.ppf(0.5 + confidence / 2))
    return _replace(
        base,
        abs_ci=abs_ci,
        rel_lift=rel,
        rel_ci=(rel - zq * rel_se, rel + zq * rel_se),
        p_value=p_value,
    )


def _replace(result: LiftResult, **changes: object) -> LiftResult:
    from dataclasses import replace

    return replace(result, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SRMResult:
    """Sample-ratio-mismatch check: chi-square goodness of fit of arm sizes to weights."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    statistic: float = NAN
    p_value: float = NAN
    mismatch: bool = False
    error: ErrorCode | None = None


def sample_ratio_mismatch(
    counts: Sequence[int], weights: Sequence[float] | None = None, threshold: float = 0.001
) -> SRMResult:
    """Flag an SRM when the arm counts are unlikely under the planned ``weights``.

    Matches ``scipy.stats.chisquare(counts, expected)``; ``mismatch`` is ``p < threshold``
    (0.001 by default, the usual SRM alarm level).
    """
    obs = np.asarray(counts, dtype=float)
    w = np.ones_like(obs) if weights is None else np.asarray(weights, dtype=float)
    if obs.size < 2 or w.size != obs.size:
        err = ErrorCode.SINGLE_ARM if obs.size < 2 else ErrorCode.BAD_INPUT
        return SRMResult(tuple(int(c) for c in obs), (), error=err)
    if (obs < 0).any() or (w <= 0).any():
        return SRMResult(tuple(int(c) for c in obs), (), error=ErrorCode.BAD_INPUT)
    total = obs.sum()
    expected = w / w.sum() * total
    if total == 0:
        return SRMResult(tuple(int(c) for c in obs), tuple(expected), error=ErrorCode.NO_DATA)
    chi2 = float(((obs - expected) ** 2 / expected).sum())
    p = float(stats.chi2.sf(chi2, obs.size - 1))
    return SRMResult(
        tuple(int(c) for c in obs), tuple(float(e) for e in expected), chi2, p, p < threshold
    )


# --------------------------------------------------------------------------- Bayesian


@dataclass(frozen=True)
class BayesResult:
    """Posterior chance that each arm is best, and expected loss of choosing it."""

    chance_to_win: tuple[float, ...]
    expected_loss: tuple[float, ...]
    error: ErrorCode | None = None


def prob_beta_greater(a1: float, b1: float, a2: float, b2: float) -> float:
    """Exact P(X1 > X2) for X1~Beta(a1,b1), X2~Beta(a2,b2) with integer ``a1``.

    Closed form (Evan Miller): sum_{i<a1} B(a2+i, b1+b2) / ((b1+i) B(1+i, b1) B(a2, b2)),
    which is P(X1 > X2) after swapping roles; evaluated in log space.
    """
    # P(X2 > X1) = sum_{i=0}^{a2-1} B(a1+i, b1+b2) / ((b2+i) B(1+i, b2) B(a1, b1))
    # we need P(X1 > X2) = sum_{i=0}^{a1-1} B(a2+i, b1+b2) / ((b1+i) B(1+i, b1) B(a2, b2))
    i = np.arange(int(a1), dtype=float)
    logs = (
        special.betaln(a2 + i, b1 + b2)
        - np.log(b1 + i)
        - special.betaln(1 + i, b1)
        - special.betaln(a2, b2)
    )
    return float(np.exp(logs).sum())


def bayes_proportions(
    arms: Sequence[SufficientStats],
    prior: tuple[float, float] = (1.0, 1.0),
    draws: int = 100_000,
    random_state: int | None = 0,
) -> BayesResult:
    """Beta-Binomial chance to win and expected loss by seeded Monte Carlo."""
    if len(arms) < 2:
        return BayesResult((), (), ErrorCode.SINGLE_ARM)
    for s in arms:
        err = _check(s, binary=True)
        if err:
            return BayesResult((), (), err)
    rng = np.random.default_rng(random_state)
    samples = np.column_stack(
        [rng.beta(prior[0] + s.sum, prior[1] + s.n - s.sum, size=draws) for s in arms]
    )
    return _from_samples(samples)


def bayes_means(
    arms: Sequence[SufficientStats], draws: int = 100_000, random_state: int | None = 0
) -> BayesResult:
    """Normal-approximation posterior (flat prior): mean ~ N(x̄, s²/n) per arm."""
    if len(arms) < 2:
        return BayesResult((), (), ErrorCode.SINGLE_ARM)
    for s in arms:
        err = _check(s)
        if err or s.n < 2:
            return BayesResult((), (), err or ErrorCode.NO_DATA)
    sds = [math.sqrt(s.variance / s.n) for s in arms]
    if all(sd == 0 for sd in sds):
        return BayesResult((), (), ErrorCode.NO_VARIANCE)
    rng = np.random.default_rng(random_state)
    samples = np.column_stack(
        [rng.normal(s.mean, sd, size=draws) for s, sd in zip(arms, sds, strict=True)]
    )
    return _from_samples(samples)


def chance_to_beat_control_means(treatment: SufficientStats, control: SufficientStats) -> float:
    """Closed-form P(mu_t > mu_c) under the normal approximation; NaN if degenerate."""
    if treatment.n < 2 or control.n < 2:
        return NAN
    se = math.sqrt(treatment.variance / treatment.n + control.variance / control.n)
    if se == 0:
        return NAN
    return float(stats.norm.cdf((treatment.mean - control.mean) / se))


def _from_samples(samples: np.ndarray) -> BayesResult:
    best = samples.argmax(axis=1)
    k = samples.shape[1]
    ctw = np.bincount(best, minlength=k) / samples.shape[0]
    loss = (samples.max(axis=1, keepdims=True) - samples).mean(axis=0)
    return BayesResult(tuple(float(x) for x in ctw), tuple(float(x) for x in loss))
