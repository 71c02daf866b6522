"""Uplift: ATEs per segment and a T-learner with Qini evaluation (synthetic + Hillstrom)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from statsmodels.stats.proportion import proportions_ztest

from microseg.errors import MicrosegError
from microseg.experiments.uplift import (
    TLearner,
    arm_summary,
    hillstrom_report,
    qini_coefficient,
    qini_curve,
    treatment_effects,
    uplift_at_k,
)

HILLSTROM = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "hillstrom_email"
    / "hillstrom.csv"
)


def _planted(
    n: int = 20_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x[:,0] > 0 users respond to treatment (+20 pp), others do not."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    t = rng.random(n) < 0.5
    true_uplift = np.where(X[:, 0] > 0, 0.2, 0.0)
    y = (rng.random(n) < 0.1 + true_uplift * t).astype(int)
    return X, t, y, true_uplift


def test_qini_ranks_true_uplift_above_random() -> None:
    _, t, y, true_uplift = _planted()
    rnd = np.random.default_rng(1).random(len(y))
    # worked by hand: Q rises to N_t*0.1 = 1000 at x=0.5 then stays flat, the random line is
    # 1000x, so the area between them is 250 responders, i.e. 0.0125 per user.
    assert qini_coefficient(true_uplift, t, y) == pytest.approx(0.0125, abs=0.003)
    assert abs(qini_coefficient(rnd, t, y)) < 0.003
    assert uplift_at_k(true_uplift, t, y, 0.5) == pytest.approx(0.2, abs=0.02)
    curve = qini_curve(true_uplift, t, y)
    assert curve["fraction"].iloc[0] == 0 and curve["fraction"].iloc[-1] == 1
    assert curve["qini"].iloc[-1] == pytest.approx(curve["random"].iloc[-1])


def test_tlearner_recovers_planted_responders() -> None:
    X, t, y, true_uplift = _planted()
    model = TLearner(estimator=LogisticRegression(), random_state=0).fit(
        X[:15000], t[:15000], y[:15000]
    )
    u = model.predict(X[15000:])
    assert np.corrcoef(u, true_uplift[15000:])[0, 1] > 0.7
    with pytest.raises(ValueError, match="not fitted"):
        TLearner().predict(X)
    with pytest.raises(ValueError, match="treated and control"):
        TLearner().fit(X, np.ones(len(y)), y)


def test_treatment_effects_small_table_and_degenerate_segment() -> None:
    df = pd.DataFrame(
        {
            "arm": ["c"] * 4 + ["t"] * 4 + ["c", "t"],
            "seg": ["a"] * 8 + ["b", "b"],
            "y": [0, 0, 1, 0, 1, 1, 0, 1, 1, 1],
        }
    )
    eff = treatment_effects(df, "arm", "c", ["y"], by="seg")
    a = eff[eff.seg == "a"].iloc[0]
    assert a.ate == pytest.approx(0.5) and a.error == ""
    b = eff[eff.seg == "b"].iloc[0]
    assert b.error != ""  # one user per arm: flagged, not raised
    with pytest.raises(MicrosegError, match="did you mean 'arm'"):
        treatment_effects(df, "armm", "c", ["y"])


needs_hillstrom = pytest.mark.skipif(
    not HILLSTROM.exists(), reason=f"Hillstrom data not found at {HILLSTROM}"
)


@pytest.fixture(scope="module")
def report() -> dict:  # type: ignore[type-arg]
    return hillstrom_report(HILLSTROM, treatment="Womens E-Mail", random_state=0)


@needs_hillstrom
def test_hillstrom_published_rates(report: dict) -> None:  # type: ignore[type-arg]
    arms = report["arms"].set_index("segment")
    assert arms.loc["Mens E-Mail", "visit_rate"] == pytest.approx(0.1828, abs=5e-5)
    assert arms.loc["Womens E-Mail", "visit_rate"] == pytest.approx(0.1514, abs=5e-5)
    assert arms.loc["No E-Mail", "visit_rate"] == pytest.approx(0.1062, abs=5e-5)
    assert arms.loc["Mens E-Mail", "conversion_rate"] == pytest.approx(0.0125, abs=5e-5)
    assert arms.loc["Mens E-Mail", "spend_mean"] == pytest.approx(1.42, abs=5e-3)
    assert arms["n"].sum() == 64_000


@needs_hillstrom
def test_hillstrom_ate_matches_statsmodels(report: dict) -> None:  # type: ignore[type-arg]
    eff = report["effects"]["overall"].set_index(["treatment", "outcome"])
    row = eff.loc[("Mens E-Mail", "visit")]
    k1, k2 = round(row.mean_treatment * row.n_treatment), round(row.mean_control * row.n_control)
    _, p = proportions_ztest([k1, k2], [row.n_treatment, row.n_control])
    assert row.p_value == pytest.approx(p, abs=1e-6)
    assert row.ate == pytest.approx(0.0766, abs=1e-4) and row.ci_low > 0.069
    assert eff.loc[("Womens E-Mail", "spend"), "ci_low"] > 0


@needs_hillstrom
def test_hillstrom_womens_mail_works_on_womens_buyers_not_mens(report: dict) -> None:  # type: ignore[type-arg]
    g = report["effects"]["gender_bought"]
    g = g[g.treatment == "Womens E-Mail"].set_index("gender_bought")
    assert g.loc["womens", "ci_low"] > g.loc["mens", "ci_high"]


@needs_hillstrom
def test_hillstrom_uplift_model_beats_random_on_held_out(report: dict) -> None:  # type: ignore[type-arg]
    assert report["qini"] > report["qini_random"] + 0.001
    assert report["uplift_at_30"] > report["uplift_overall_test"] + 0.01


def test_arm_summary_columns() -> None:
    df = pd.DataFrame({"arm": ["a", "b", "a"], "visit": [1, 0, 0], "spend": [2.5, 0.0, 1.0]})
    s = arm_summary(df, "arm", ["visit", "spend"])
    assert list(s.columns) == ["arm", "n", "visit_rate", "spend_mean"]
    assert s.set_index("arm").loc["a", "spend_mean"] == pytest.approx(1.75)


@needs_hillstrom
def test_hillstrom_micro_segments_flagged_too_small_to_test() -> None:
    """Channel x zip x newbie cells of the 64k-user test: which could detect a 20 % lift?"""
    from statsmodels.stats.power import NormalIndPower

    from microseg.experiments.power import segment_mde_table

    df = pd.read_csv(HILLSTROM)
    ctrl = df[df["segment"] == "No E-Mail"]
    cells = (
        ctrl.groupby(["channel", "zip_code", "newbie"])["visit"].agg(["size", "mean"]).reset_index()
    )
    cells["segment"] = (
        cells["channel"] + "/" + cells["zip_code"] + "/" + cells["newbie"].astype(str)
    )
    table = segment_mde_table(
        cells.assign(size=cells["size"] * 3).rename(columns={"mean": "baseline"}),
        n_arms=3,
        max_relative_mde=0.3,
    )
    assert len(table) == 18
    small = table[~table["testable"]]
    assert 0 < len(small) < 18 and small["warning"].str.contains("too small").all()
    # every MDE is the statsmodels effect size for its arm size, mapped back to a rate
    row = table.iloc[0]
    h = NormalIndPower().solve_power(nobs1=row.n_per_arm, alpha=0.05, power=0.8)
    p1 = row.baseline
    expected = np.sin(np.arcsin(np.sqrt(p1)) + h / 2) ** 2 - p1
    assert row.mde_abs == pytest.approx(expected, abs=1e-5)


def test_class_transformation_recovers_planted_uplift_with_unequal_split() -> None:
    from microseg.experiments.uplift import ClassTransformation

    rng = np.random.default_rng(5)
    n = 30_000
    X = rng.normal(size=(n, 3))
    t = rng.random(n) < 0.3  # unequal split, reweighted inside
    true_uplift = np.where(X[:, 0] > 0, 0.2, 0.0)
    y = (rng.random(n) < 0.1 + true_uplift * t).astype(int)
    model = ClassTransformation(random_state=0).fit(X[:20000], t[:20000], y[:20000])
    u = model.predict(X[20000:])
    assert u[X[20000:, 0] > 0].mean() - u[X[20000:, 0] <= 0].mean() == pytest.approx(0.2, abs=0.06)
    assert qini_coefficient(u, t[20000:], y[20000:]) > 0.005
    with pytest.raises(ValueError, match="0/1 outcome"):
        ClassTransformation().fit(X, t, y * 2.5)
