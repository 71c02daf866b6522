"""End-to-end analysis: verdicts, SRM, horizon guard, mSPRT, degenerate batches, plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microseg.errors import MicrosegError
from microseg.experiments.analysis import (
    ArmStats,
    analyze_experiment,
    arms_from_frame,
    arms_from_users,
)
from microseg.experiments.plots import plot_lift
from microseg.experiments.sequential import horizon_gate, msprt, msprt_vectorised
from microseg.experiments.stats import SufficientStats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _arm(name: str, n: int, k: int, rev: float | None = None) -> ArmStats:
    revenue = SufficientStats(n, rev, rev * 40.0) if rev is not None else None
    return ArmStats(name, SufficientStats.binary(n, k), revenue)


def test_clear_winner_and_revenue() -> None:
    arms = [_arm("generic", 10000, 500, 5000.0), _arm("tailored", 10000, 640, 6400.0)]
    res = analyze_experiment(arms, planned_per_arm=8000)
    df = res.to_frame()
    conv = df[df.metric == "conversion"].iloc[0]
    assert conv.verdict == "better" and conv.p_value < 0.001 and conv.chance_to_win > 0.99
    assert conv.rel_lift == pytest.approx(0.28)
    assert set(df.metric) == {"conversion", "revenue"}
    assert not res.srm.mismatch and res.horizon is not None and res.horizon.reached


def test_fixed_horizon_refuses_early_verdict() -> None:
    arms = [_arm("a", 1000, 50), _arm("b", 1000, 90)]
    res = analyze_experiment(arms, planned_per_arm=5000)
    assert res.results[0].test.p_value < 0.01
    assert res.results[0].verdict.startswith("continue: 20%")
    assert "no final verdict" in horizon_gate([a.conversion for a in arms], 5000).message


def test_srm_invalidates_verdict() -> None:
    arms = [_arm("a", 10000, 500), _arm("b", 11000, 700)]
    res = analyze_experiment(arms)
    assert res.srm.mismatch and res.results[0].verdict == "invalid: sample ratio mismatch"
    ok = analyze_experiment(arms, expected_shares={"a": 10, "b": 11})
    assert not ok.srm.mismatch


def test_degenerate_batch_never_raises() -> None:
    arms = [_arm("c", 100, 100), _arm("t1", 0, 0), _arm("t2", 100, 100)]
    res = analyze_experiment(arms)
    verdicts = [r.verdict for r in res.results]
    assert verdicts == ["error: no_data", "error: no_variance"]
    single = analyze_experiment([_arm("only", 100, 4)])
    assert single.results[0].verdict == "error: single_arm"


def test_unknown_control_is_a_clear_error() -> None:
    with pytest.raises(MicrosegError, match="did you mean 'generic'"):
        analyze_experiment([_arm("generic", 10, 1), _arm("b", 10, 2)], control="generc")


def test_arms_from_frame_and_users() -> None:
    df = pd.DataFrame({"variant": ["a", "b"], "n": [100, 120], "conversions": [5, 9]})
    arms = arms_from_frame(df)
    assert arms[1].conversion == SufficientStats.binary(120, 9) and arms[1].revenue is None
    with pytest.raises(MicrosegError, match="missing column"):
        arms_from_frame(df.rename(columns={"n": "users"}))
    users = pd.DataFrame({"arm": ["a", "a", "b"], "conv": [1, 0, 1], "rev": [10.0, 0.0, 3.0]})
    a, b = arms_from_users(users, "arm", "conv", "rev")
    assert a.revenue == SufficientStats(2, 10.0, 100.0) and b.conversion.sum == 1


def test_msprt_controls_type_one_error_under_peeking() -> None:
    """A/A simulation with 40 peeks: naive peeking inflates alpha, mSPRT stays below it."""
    rng = np.random.default_rng(42)
    sims, looks, per_look, p = 600, 40, 250, 0.1
    a = rng.binomial(per_look, p, size=(sims, looks)).cumsum(axis=1)
    b = rng.binomial(per_look, p, size=(sims, looks)).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    pa, pb = a / n, b / n
    var = (pa * (1 - pa) + pb * (1 - pb)) / n
    var = np.where(var > 0, var, 1e-12)
    z = (pa - pb) / np.sqrt(var)
    naive_fp = (np.abs(z) > 1.959964).any(axis=1).mean()
    seq = msprt_vectorised(pa - pb, var, tau=0.1 * np.sqrt(p * (1 - p)))
    msprt_fp = (seq[:, -1] < 0.05).mean()
    assert naive_fp > 0.12
    assert msprt_fp <= 0.05


def test_msprt_detects_real_effect_and_api() -> None:
    looks = [
        (SufficientStats.binary(n, int(n * 0.13)), SufficientStats.binary(n, int(n * 0.10)))
        for n in range(1000, 20001, 1000)
    ]
    res = msprt(looks)
    assert res.reject and res.stopped_at is not None and res.stopped_at < 10
    assert all(x >= y for x, y in zip(res.p_values, res.p_values[1:], strict=False))
    assert msprt([]).error is not None


def test_plot_lift_writes_png(tmp_path: Path) -> None:
    arms = [
        _arm("generic", 5000, 250, 2500.0),
        _arm("tailored", 5000, 300, 2600.0),
        _arm("x", 5000, 240, 2300.0),
    ]
    fig = plot_lift(analyze_experiment(arms))
    out = tmp_path / "lift.png"
    fig.savefig(out)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000


def test_public_api_exports_resolve() -> None:
    import microseg.experiments as api

    assert sorted(api.__all__) == sorted(api._EXPORTS)
    assert api.SufficientStats is SufficientStats
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        api.nope  # noqa: B018
