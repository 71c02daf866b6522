"""Golden tests: microseg statistics vs scipy / statsmodels on identical inputs (1e-6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower, zt_ind_solve_power
from statsmodels.stats.proportion import proportion_effectsize, proportions_ztest

from microseg.experiments import power as pw
from microseg.experiments.stats import (
    ErrorCode,
    SufficientStats,
    bayes_means,
    bayes_proportions,
    chance_to_beat_control_means,
    chi_square_test,
    lift,
    prob_beta_greater,
    sample_ratio_mismatch,
    two_proportion_ztest,
    welch_ttest,
)

TOL = 1e-6

PROPORTION_CASES = [
    (1000, 120, 1000, 100),
    (21307, 3894, 21306, 2262),
    (50, 3, 70, 1),
    (400, 399, 380, 370),
]


@pytest.mark.parametrize(("n1", "k1", "n2", "k2"), PROPORTION_CASES)
def test_ztest_matches_statsmodels(n1: int, k1: int, n2: int, k2: int) -> None:
    z, p = proportions_ztest([k1, k2], [n1, n2])
    r = two_proportion_ztest(SufficientStats.binary(n1, k1), SufficientStats.binary(n2, k2))
    assert r.ok
    assert r.statistic == pytest.approx(z, abs=TOL)
    assert r.p_value == pytest.approx(p, abs=TOL)


@pytest.mark.parametrize(("n1", "k1", "n2", "k2"), PROPORTION_CASES)
@pytest.mark.parametrize("correction", [False, True])
def test_chi_square_matches_scipy(n1: int, k1: int, n2: int, k2: int, correction: bool) -> None:
    table = np.array([[k1, n1 - k1], [k2, n2 - k2]])
    chi2, p, dof, _ = sps.chi2_contingency(table, correction=correction)
    r = chi_square_test(
        [SufficientStats.binary(n1, k1), SufficientStats.binary(n2, k2)], correction
    )
    assert r.statistic == pytest.approx(chi2, abs=TOL)
    assert r.p_value == pytest.approx(p, abs=TOL)
    assert r.df == dof


def test_chi_square_three_arms_matches_scipy_and_equals_z_squared() -> None:
    arms = [(21307, 3894), (21387, 3238), (21306, 2262)]
    table = np.array([[k, n - k] for n, k in arms])
    chi2, p, dof, _ = sps.chi2_contingency(table)
    r = chi_square_test([SufficientStats.binary(n, k) for n, k in arms])
    assert (r.statistic, r.p_value, r.df) == pytest.approx((chi2, p, dof), abs=TOL)
    two = chi_square_test([SufficientStats.binary(*arms[0]), SufficientStats.binary(*arms[2])])
    z = two_proportion_ztest(SufficientStats.binary(*arms[0]), SufficientStats.binary(*arms[2]))
    assert two.statistic == pytest.approx(z.statistic**2, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_welch_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.lognormal(1.0, 1.2, size=300) * (rng.random(300) < 0.3)
    b = rng.lognormal(0.9, 1.0, size=450) * (rng.random(450) < 0.25)
    ref = sps.ttest_ind(a, b, equal_var=False)
    r = welch_ttest(SufficientStats.from_values(a), SufficientStats.from_values(b))
    assert r.statistic == pytest.approx(ref.statistic, abs=TOL)
    assert r.p_value == pytest.approx(ref.pvalue, abs=TOL)
    assert r.df == pytest.approx(ref.df, abs=1e-6)
    # absolute-lift interval equals scipy's Welch confidence interval
    ci = ref.confidence_interval(0.95)
    lr = lift(SufficientStats.from_values(a), SufficientStats.from_values(b), binary=False)
    assert lr.abs_ci == pytest.approx((ci.low, ci.high), abs=TOL)
    assert lr.p_value == pytest.approx(ref.pvalue, abs=TOL)


def test_relative_lift_delta_method_by_hand_and_by_bootstrap() -> None:
    t, c = SufficientStats.binary(10000, 1200), SufficientStats.binary(10000, 1000)
    r = lift(t, c)
    se = math.sqrt(0.12 * 0.88 / 10000 / 0.1**2 + 0.12**2 * 0.1 * 0.9 / 10000 / 0.1**4)
    assert r.rel_lift == pytest.approx(0.2)
    assert r.rel_ci[1] - r.rel_lift == pytest.approx(1.959963984540054 * se, rel=1e-9)
    assert r.abs_ci[0] > 0 and r.rel_ci[0] > 0
    rng = np.random.default_rng(0)
    boots = rng.binomial(10000, 0.12, 20000) / rng.binomial(10000, 0.1, 20000) - 1
    assert np.std(boots) == pytest.approx(se, rel=0.03)


def test_srm_matches_scipy_chisquare() -> None:
    counts, weights = [5100, 4900, 10300], [1, 1, 2]
    exp = np.array(weights) / 4 * sum(counts)
    ref = sps.chisquare(counts, exp)
    r = sample_ratio_mismatch(counts, weights)
    assert (r.statistic, r.p_value) == pytest.approx((ref.statistic, ref.pvalue), abs=TOL)
    assert not r.mismatch
    assert sample_ratio_mismatch([10000, 10600]).mismatch


@pytest.mark.parametrize(("p1", "p2"), [(0.05, 0.06), (0.106, 0.12), (0.5, 0.45), (0.01, 0.0125)])
@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_sample_size_matches_statsmodels(p1: float, p2: float, ratio: float) -> None:
    h = proportion_effectsize(p2, p1)
    assert pw.proportion_effect_size(p2, p1) == pytest.approx(h, abs=1e-12)
    ref = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=ratio)
    assert pw.solve_nobs1(h, 0.05, 0.8, ratio) == pytest.approx(ref, abs=1e-6 * max(1, ref))
    ref_z = zt_ind_solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=ratio)
    assert pw.solve_nobs1(h, 0.05, 0.8, ratio) == pytest.approx(ref_z, rel=1e-6)
    plan = pw.plan_proportion(p1, p2 - p1, ratio=ratio)
    assert plan.n_control == math.ceil(ref)


@pytest.mark.parametrize("alternative", ["two-sided", "larger"])
@pytest.mark.parametrize(("es", "n"), [(0.1, 500), (0.05, 3000), (0.3, 40)])
def test_power_and_mde_match_statsmodels(alternative: str, es: float, n: int) -> None:
    ref = NormalIndPower().power(es, n, 0.05, ratio=1.0, alternative=alternative)
    assert pw.power(es, n, alternative=alternative) == pytest.approx(ref, abs=TOL)
    ref_es = NormalIndPower().solve_power(nobs1=n, alpha=0.05, power=0.8, alternative=alternative)
    ours = pw.solve_effect_size(n, alternative=alternative)
    # ours is the exact root (power 0.8 to 1e-9); statsmodels' own solver stops at ~1e-6 power
    # error for one-sided small-n cases (power(ref_es) = 0.799998), hence 1e-5 on the effect.
    assert NormalIndPower().power(ours, n, 0.05, alternative=alternative) == pytest.approx(
        0.8, abs=1e-9
    )
    assert ours == pytest.approx(ref_es, abs=1e-5)


def test_mean_plan_matches_statsmodels() -> None:
    plan = pw.plan_mean(baseline_mean=1.0, sd=15.0, mde_abs=0.5)
    assert plan.n_control == math.ceil(
        zt_ind_solve_power(effect_size=0.5 / 15, alpha=0.05, power=0.8)
    )


def test_mde_inverts_sample_size() -> None:
    plan = pw.plan_proportion(0.05, 0.01)
    mde = pw.mde_proportion(0.05, plan.n_control)
    assert mde == pytest.approx(0.01, abs=2e-5)


def test_beta_closed_form_agrees_with_monte_carlo() -> None:
    exact = prob_beta_greater(1 + 130, 1 + 870, 1 + 110, 1 + 890)
    mc = bayes_proportions(
        [SufficientStats.binary(1000, 130), SufficientStats.binary(1000, 110)],
        draws=400_000,
        random_state=1,
    )
    assert mc.chance_to_win[0] == pytest.approx(exact, abs=3e-3)
    # symmetric case is exactly one half
    assert prob_beta_greater(11, 91, 11, 91) == pytest.approx(0.5, abs=1e-9)
    assert sum(mc.chance_to_win) == pytest.approx(1.0)


def test_bayes_means_two_arms_matches_normal_closed_form() -> None:
    t, c = SufficientStats(500, 800.0, 9000.0), SufficientStats(500, 700.0, 8000.0)
    mc = bayes_means([t, c], draws=400_000, random_state=3)
    assert mc.chance_to_win[0] == pytest.approx(chance_to_beat_control_means(t, c), abs=3e-3)


DEGENERATE = [
    (SufficientStats.binary(0, 0), SufficientStats.binary(100, 5), ErrorCode.NO_DATA),
    (SufficientStats.binary(100, 100), SufficientStats.binary(100, 100), ErrorCode.NO_VARIANCE),
    (SufficientStats.binary(100, 0), SufficientStats.binary(100, 0), ErrorCode.NO_VARIANCE),
    (SufficientStats.binary(100, 120), SufficientStats.binary(100, 5), ErrorCode.BAD_INPUT),
]


@pytest.mark.parametrize(("t", "c", "code"), DEGENERATE)
def test_degenerate_inputs_return_error_codes(
    t: SufficientStats, c: SufficientStats, code: ErrorCode
) -> None:
    z = two_proportion_ztest(t, c)
    lr = lift(t, c)
    assert z.error is code and math.isnan(z.p_value)
    assert lr.error is code
    assert chi_square_test([t, c]).error is code


def test_zero_variance_and_zero_baseline_for_means() -> None:
    same = SufficientStats.from_values([2.0] * 10)
    assert welch_ttest(same, same).error is ErrorCode.NO_VARIANCE
    assert welch_ttest(SufficientStats.from_values([1.0]), same).error is ErrorCode.NO_DATA
    zero = SufficientStats.from_values([0.0] * 10)
    r = lift(SufficientStats.from_values([0, 1, 2, 0.5]), zero, binary=False)
    assert r.error is ErrorCode.ZERO_BASELINE and math.isnan(r.rel_lift) and r.abs_lift > 0
    assert bayes_means([same]).error is ErrorCode.SINGLE_ARM
    assert chi_square_test([same]).error is ErrorCode.SINGLE_ARM
    assert sample_ratio_mismatch([0, 0]).error is ErrorCode.NO_DATA


@pytest.mark.parametrize(("es", "ratio"), [(0.5, 1.0), (0.2, 1.0), (0.8, 2.0), (0.05, 1.0)])
def test_t_test_power_and_sample_size_match_statsmodels(es: float, ratio: float) -> None:
    from statsmodels.stats.power import TTestIndPower, tt_ind_solve_power

    assert pw.power_t(es, 30, ratio=ratio) == pytest.approx(
        TTestIndPower().power(es, 30, 0.05, ratio=ratio), abs=TOL
    )
    ref = tt_ind_solve_power(effect_size=es, alpha=0.05, power=0.8, ratio=ratio)
    ours = pw.solve_nobs1_t(es, ratio=ratio)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert ours > pw.solve_nobs1(es, ratio=ratio)  # t needs a few more users than z
    plan = pw.plan_mean(10.0, 4.0, 2.0, use_t=True)
    assert plan.n_control == math.ceil(tt_ind_solve_power(effect_size=0.5, alpha=0.05, power=0.8))


def test_analysis_metric_names() -> None:
    from microseg.experiments.analysis import ArmStats, analyze_experiment

    arms = [
        ArmStats(n, SufficientStats.binary(1000, k), SufficientStats(1000, 5.0 * k, 50.0 * k))
        for n, k in (("c", 100), ("t", 130))
    ]
    res = analyze_experiment(arms, metric_names=("visit", "spend"))
    assert [r.metric for r in res.results] == ["visit", "spend"]
