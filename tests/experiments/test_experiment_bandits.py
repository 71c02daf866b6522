"""Bandits: convergence on planted rates, warm-up, seeding; OPE on the Open Bandit Dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microseg.experiments.bandits import UCB1, SegmentedBandit, ThompsonSampling, simulate
from microseg.experiments.ope import action_distribution, evaluate_obd, ipw, load_obd_log, snipw

OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "open_bandit_dataset_sample"
RATES = {"generic": 0.04, "tailored_a": 0.05, "tailored_b": 0.08}


@pytest.mark.parametrize(
    "make",
    [
        lambda: ThompsonSampling(arms=list(RATES), min_exposures=50, random_state=1),
        lambda: UCB1(arms=list(RATES), c=0.5, min_exposures=50, random_state=1),
    ],
    ids=["thompson", "ucb1"],
)
def test_converges_to_best_arm(make) -> None:  # type: ignore[no-untyped-def]
    res = simulate(make(), RATES, horizon=8000, random_state=7)
    assert res.share("tailored_b", last=2000) > 0.8
    # sub-linear regret: the second half adds less regret than the first
    half = len(res.regret) // 2
    assert res.regret[-1] - res.regret[half] < res.regret[half]


def test_min_exposures_before_reallocation() -> None:
    ts = ThompsonSampling(arms=["a", "b", "c"], min_exposures=20, random_state=0)
    served = []
    for _ in range(60):
        arm = ts.select()
        served.append(arm)
        ts.update(arm, 1 if arm == "a" else 0)  # 'a' looks great from the first pull
    assert {a: served.count(a) for a in "abc"} == {"a": 20, "b": 20, "c": 20}
    assert ts.allocation(draws=4000)["a"] > 0.9


def test_seeded_runs_are_reproducible() -> None:
    r1 = simulate(ThompsonSampling(arms=list(RATES), random_state=3), RATES, 500, random_state=5)
    r2 = simulate(ThompsonSampling(arms=list(RATES), random_state=3), RATES, 500, random_state=5)
    assert np.array_equal(r1.choices, r2.choices)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="two distinct arms"):
        ThompsonSampling(arms=["a"])
    ts = ThompsonSampling(arms=["a", "b"])
    with pytest.raises(ValueError, match="unknown arm"):
        ts.update("z", 1)
    with pytest.raises(ValueError, match="0/1"):
        ts.update("a", 3.5)


def test_segmented_bandit_learns_per_segment() -> None:
    rates = {"young": {"x": 0.2, "y": 0.02}, "old": {"x": 0.02, "y": 0.2}}
    sb = SegmentedBandit(
        lambda s: ThompsonSampling(arms=["x", "y"], min_exposures=10, random_state=len(s))
    )
    rng = np.random.default_rng(0)
    for _ in range(1500):
        for seg, r in rates.items():
            arm = sb.select(seg)
            sb.update(seg, arm, int(rng.random() < r[arm]))
    assert sb.policies_["young"].pulls_[0] > 1000 and sb.policies_["old"].pulls_[1] > 1000


def test_ipw_is_unbiased_and_intervals_cover_on_synthetic_logs() -> None:
    rng = np.random.default_rng(0)
    n, p = 20_000, np.array([0.1, 0.3, 0.6])
    mu = np.array([0.5, 0.3, 0.2])
    pi = np.array([0.0, 0.0, 1.0])  # target policy: always the best arm, true value 0.6
    values, covered = [], 0
    for _ in range(40):
        a = rng.choice(3, size=n, p=mu)
        r = (rng.random(n) < p[a]).astype(float)
        est = ipw(r, mu[a], pi[a])
        values.append(est.value)
        covered += est.covers(0.6) and snipw(r, mu[a], pi[a]).covers(0.6)
    assert abs(np.mean(values) - 0.6) < 0.004
    assert covered >= 34  # ~95 % nominal coverage


needs_obd = pytest.mark.skipif(
    not OBD.exists(), reason=f"Open Bandit Dataset sample not found at {OBD}"
)


@needs_obd
def test_obd_bts_value_from_random_logs_covers_on_policy_ctr() -> None:
    res = evaluate_obd(OBD, "all", target="bts", logged="random")
    truth = res["on-policy"]
    assert truth.value == pytest.approx(0.0042) and truth.n == 10_000
    for name in ("IPW", "SNIPW", "DR"):
        assert res[name].covers(truth.value), (name, res[name], truth)
    # logged random CTR is the README's 0.0038
    assert res["logged"].value == pytest.approx(0.0038)


@needs_obd
@pytest.mark.parametrize("campaign", ["all", "men", "women"])
def test_obd_estimates_overlap_truth_every_campaign(campaign: str) -> None:
    for target, logged in (("bts", "random"), ("random", "bts")):
        res = evaluate_obd(OBD, campaign, target=target, logged=logged)
        truth = res["on-policy"]
        est = res["SNIPW"]
        assert est.ci_low <= truth.ci_high and truth.ci_low <= est.ci_high


@needs_obd
def test_obd_action_distribution_rows_sum_to_one() -> None:
    log = load_obd_log(OBD, "bts", "men")
    dist = action_distribution(log, 34)
    assert dist.shape == (3, 34) and np.allclose(dist.sum(axis=1), 1.0)
    assert log["propensity_score"].between(0, 1).all()
