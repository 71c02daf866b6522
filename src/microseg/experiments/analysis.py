"""Analyse a finished (or running) experiment: lifts, tests, SRM, Bayes, horizon guard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from microseg.errors import MicrosegError, did_you_mean
from microseg.experiments.sequential import HorizonStatus, horizon_gate
from microseg.experiments.stats import (
    BayesResult,
    ErrorCode,
    LiftResult,
    SRMResult,
    SufficientStats,
    TestResult,
    bayes_means,
    bayes_proportions,
    lift,
    sample_ratio_mismatch,
    two_proportion_ztest,
    welch_ttest,
)


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one arm: conversions and, optionally, revenue."""

    name: str
    conversion: SufficientStats
    revenue: SufficientStats | None = None

    @property
    def n(self) -> int:
        return self.conversion.n


@dataclass(frozen=True)
class VariantResult:
    """One metric of one treatment arm compared with control."""

    variant: str
    metric: str
    n: int
    mean: float
    lift: LiftResult
    test: TestResult
    chance_to_win: float
    verdict: str

    @property
    def error(self) -> ErrorCode | None:
        return self.lift.error or self.test.error


@dataclass(frozen=True)
class ExperimentResult:
    """Everything about an experiment's comparison, one row per (variant, metric)."""

    control: str
    results: tuple[VariantResult, ...]
    srm: SRMResult
    horizon: HorizonStatus | None
    bayes: Mapping[str, BayesResult]
    alpha: float

    def to_frame(self) -> pd.DataFrame:
        """Flat results table (one row per variant and metric)."""
        rows = []
        for r in self.results:
            rows.append(
                {
                    "variant": r.variant,
                    "metric": r.metric,
                    "n": r.n,
                    "mean": r.mean,
                    "control_mean": r.lift.control_mean,
                    "abs_lift": r.lift.abs_lift,
                    "abs_ci_low": r.lift.abs_ci[0],
                    "abs_ci_high": r.lift.abs_ci[1],
                    "rel_lift": r.lift.rel_lift,
                    "rel_ci_low": r.lift.rel_ci[0],
                    "rel_ci_high": r.lift.rel_ci[1],
                    "statistic": r.test.statistic,
                    "p_value": r.test.p_value,
                    "chance_to_win": r.chance_to_win,
                    "verdict": r.verdict,
                    "error": r.error.value if r.error else "",
                }
            )
        return pd.DataFrame(rows)


def analyze_experiment(
    arms: Sequence[ArmStats],
    control: str | None = None,
    *,
    expected_shares: Mapping[str, float] | None = None,
    planned_per_arm: int | None = None,
    alpha: float = 0.05,
    srm_threshold: float = 0.001,
    random_state: int | None = 0,
    metric_names: tuple[str, str] = ("conversion", "revenue"),
) -> ExperimentResult:
    """Compare every arm with ``control`` (default: the first arm) on each available metric.

    Verdicts: ``invalid: sample ratio mismatch`` when the arm sizes contradict the plan;
    ``continue: …`` while the fixed horizon (``planned_per_arm``) is not reached — no
    significance claim is made before that; otherwise ``better``/``worse``/``no difference``
    at level ``alpha``. Degenerate arms produce a verdict ``error: <code>``.
    ``metric_names`` labels the 0/1 and the continuous metric (e.g. ``("visit", "spend")``).
    """
    if not arms:
        raise MicrosegError("no arms to analyse")
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise MicrosegError(f"duplicate arm names: {names}")
    control = control or names[0]
    if control not in names:
        raise MicrosegError(
            f"control arm {control!r} not found{did_you_mean(control, names)}; arms: {names}"
        )
    by_name = {a.name: a for a in arms}
    ctrl = by_name[control]
    weights = [float(expected_shares.get(n, 0.0)) for n in names] if expected_shares else None
    srm = sample_ratio_mismatch([a.n for a in arms], weights, srm_threshold)
    horizon = (
        horizon_gate([a.conversion for a in arms], planned_per_arm) if planned_per_arm else None
    )

    bayes: dict[str, BayesResult] = {
        "conversion": bayes_proportions([a.conversion for a in arms], random_state=random_state)
    }
    has_revenue = all(a.revenue is not None for a in arms)
    if has_revenue:
        bayes["revenue"] = bayes_means(
            [a.revenue for a in arms if a.revenue], random_state=random_state
        )

    results: list[VariantResult] = []
    for i, arm in enumerate(arms):
        if arm.name == control:
            continue
        metrics: list[tuple[str, SufficientStats, SufficientStats, bool]] = [
            ("conversion", arm.conversion, ctrl.conversion, True)
        ]
        if has_revenue and arm.revenue is not None and ctrl.revenue is not None:
            metrics.append(("revenue", arm.revenue, ctrl.revenue, False))
        for metric, t, c, binary in metrics:
            lr = lift(t, c, confidence=1 - alpha, binary=binary)
            test = two_proportion_ztest(t, c) if binary else welch_ttest(t, c)
            ctw_all = bayes[metric].chance_to_win
            ctw = ctw_all[i] if ctw_all else float("nan")
            results.append(
                VariantResult(
                    arm.name,
                    metric_names[0] if binary else metric_names[1],
                    t.n,
                    t.mean,
                    lr,
                    test,
                    ctw,
                    _verdict(lr, test, srm, horizon, alpha),
                )
            )
    if len(arms) < 2:
        results.append(
            VariantResult(
                control,
                metric_names[0],
                ctrl.n,
                ctrl.conversion.mean,
                LiftResult(error=ErrorCode.SINGLE_ARM),
                TestResult(error=ErrorCode.SINGLE_ARM),
                float("nan"),
                "error: single_arm",
            )
        )
    return ExperimentResult(control, tuple(results), srm, horizon, bayes, alpha)


def _verdict(
    lr: LiftResult, test: TestResult, srm: SRMResult, horizon: HorizonStatus | None, alpha: float
) -> str:
    err = test.error or lr.error
    if err and err is not ErrorCode.ZERO_BASELINE:
        return f"error: {err.value}"
    if srm.mismatch:
        return "invalid: sample ratio mismatch"
    if horizon is not None and not horizon.reached:
        return f"continue: {horizon.fraction:.0%} of planned sample"
    if test.p_value < alpha:
        return "better" if lr.abs_lift > 0 else "worse"
    return "no difference"


def arms_from_frame(df: pd.DataFrame) -> list[ArmStats]:
    """Arms from a per-variant table.

    Required columns: ``variant, n, conversions``; optional ``revenue_sum`` and
    ``revenue_sum_sq`` (both, for Welch tests on revenue).
    """
    need = ["variant", "n", "conversions"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        hint = "".join(did_you_mean(m, [str(c) for c in df.columns]) for m in missing)
        raise MicrosegError(f"missing column(s) {missing}{hint}; found {list(df.columns)}")
    has_rev = {"revenue_sum", "revenue_sum_sq"} <= set(df.columns)
    arms = []
    for row in df.to_dict("records"):
        try:
            n, conv = int(row["n"]), int(row["conversions"])
        except (TypeError, ValueError) as exc:
            raise MicrosegError(
                f"variant {row['variant']!r}: n and conversions must be integers"
            ) from exc
        rev = (
            SufficientStats(n, float(row["revenue_sum"]), float(row["revenue_sum_sq"]))
            if has_rev
            else None
        )
        arms.append(ArmStats(str(row["variant"]), SufficientStats.binary(n, conv), rev))
    return arms


def arms_from_users(
    df: pd.DataFrame, arm_col: str, conversion_col: str, revenue_col: str | None = None
) -> list[ArmStats]:
    """Arms from one row per user (group-by to sufficient statistics)."""
    cols = [arm_col, conversion_col] + ([revenue_col] if revenue_col else [])
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise MicrosegError(f"missing column(s) {missing}; found {list(df.columns)}")
    arms = []
    for name, g in df.groupby(arm_col, sort=False):
        conv = g[conversion_col].astype(float)
        rev = SufficientStats.from_values(g[revenue_col].to_numpy(float)) if revenue_col else None
        arms.append(ArmStats(str(name), SufficientStats.binary(len(g), int(conv.sum())), rev))
    return arms
