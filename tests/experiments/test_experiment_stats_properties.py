"""Hypothesis invariants of the statistics: never raise, symmetric, intervals consistent."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.experiments.stats import (
    SufficientStats,
    chi_square_test,
    lift,
    sample_ratio_mismatch,
    two_proportion_ztest,
)


@st.composite
def binary_arm(draw: st.DrawFn) -> SufficientStats:
    n = draw(st.integers(0, 10_000))
    return SufficientStats.binary(n, draw(st.integers(0, n)))


@settings(max_examples=300, deadline=None)
@given(t=binary_arm(), c=binary_arm())
def test_never_raise_and_p_values_are_probabilities(t: SufficientStats, c: SufficientStats) -> None:
    z = two_proportion_ztest(t, c)
    chi = chi_square_test([t, c])
    lr = lift(t, c)
    if z.ok:
        assert 0 <= z.p_value <= 1
        # the 2x2 chi-square without correction is the squared z statistic
        assert chi.ok and math.isclose(chi.statistic, z.statistic**2, rel_tol=1e-9, abs_tol=1e-9)
    else:
        assert math.isnan(z.p_value)
    if lr.ok:
        lo, hi = lr.abs_ci
        assert lo <= lr.abs_lift <= hi
        assert lr.rel_ci[0] <= lr.rel_lift <= lr.rel_ci[1]


@settings(max_examples=200, deadline=None)
@given(t=binary_arm(), c=binary_arm())
def test_swapping_arms_negates(t: SufficientStats, c: SufficientStats) -> None:
    a, b = two_proportion_ztest(t, c), two_proportion_ztest(c, t)
    if a.ok:
        assert math.isclose(a.statistic, -b.statistic, abs_tol=1e-12)
        assert math.isclose(a.p_value, b.p_value, abs_tol=1e-12)
    la, lb = lift(t, c), lift(c, t)
    if la.ok and lb.ok:
        assert math.isclose(la.abs_lift, -lb.abs_lift, abs_tol=1e-12)
        assert math.isclose(la.abs_ci[0], -lb.abs_ci[1], abs_tol=1e-12)


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 100_000), min_size=0, max_size=6))
def test_srm_total_preserved(counts: list[int]) -> None:
    r = sample_ratio_mismatch(counts)
    if r.error is None:
        assert math.isclose(sum(r.expected), sum(counts)) and 0 <= r.p_value <= 1
