"""Experiments: sticky assignment, power, statistics, sequential guards, bandits, uplift.

Statistics follow GrowthBook's gbstats habits: SQL (or pandas) produces sufficient statistics
into frozen dataclasses, statistics are pure functions, and degenerate data returns a result
carrying an :class:`ErrorCode` instead of raising.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ArmStats": "microseg.experiments.analysis",
    "ClassTransformation": "microseg.experiments.uplift",
    "ErrorCode": "microseg.experiments.stats",
    "Experiment": "microseg.experiments.assignment",
    "ExperimentResult": "microseg.experiments.analysis",
    "ExperimentSpec": "microseg.experiments.assignment",
    "LiftResult": "microseg.experiments.stats",
    "OPEEstimate": "microseg.experiments.ope",
    "SegmentedBandit": "microseg.experiments.bandits",
    "SufficientStats": "microseg.experiments.stats",
    "TLearner": "microseg.experiments.uplift",
    "TestResult": "microseg.experiments.stats",
    "ThompsonSampling": "microseg.experiments.bandits",
    "UCB1": "microseg.experiments.bandits",
    "Variant": "microseg.experiments.assignment",
    "VariantResult": "microseg.experiments.analysis",
    "analyze_experiment": "microseg.experiments.analysis",
    "arms_from_frame": "microseg.experiments.analysis",
    "arms_from_users": "microseg.experiments.analysis",
    "bayes_means": "microseg.experiments.stats",
    "bayes_proportions": "microseg.experiments.stats",
    "chi_square_test": "microseg.experiments.stats",
    "doubly_robust": "microseg.experiments.ope",
    "evaluate_obd": "microseg.experiments.ope",
    "horizon_gate": "microseg.experiments.sequential",
    "ipw": "microseg.experiments.ope",
    "lift": "microseg.experiments.stats",
    "load_experiment": "microseg.experiments.assignment",
    "mde_proportion": "microseg.experiments.power",
    "msprt": "microseg.experiments.sequential",
    "plan_mean": "microseg.experiments.power",
    "plan_proportion": "microseg.experiments.power",
    "qini_coefficient": "microseg.experiments.uplift",
    "qini_curve": "microseg.experiments.uplift",
    "sample_ratio_mismatch": "microseg.experiments.stats",
    "segment_mde_table": "microseg.experiments.power",
    "simulate": "microseg.experiments.bandits",
    "snipw": "microseg.experiments.ope",
    "treatment_effects": "microseg.experiments.uplift",
    "two_proportion_ztest": "microseg.experiments.stats",
    "uplift_at_k": "microseg.experiments.uplift",
    "welch_ttest": "microseg.experiments.stats",
}


def __getattr__(name: str) -> Any:
    """Import public names lazily so ``microseg.experiments.power`` stays light (no sklearn)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'microseg.experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "UCB1",
    "ArmStats",
    "ClassTransformation",
    "ErrorCode",
    "Experiment",
    "ExperimentResult",
    "ExperimentSpec",
    "LiftResult",
    "OPEEstimate",
    "SegmentedBandit",
    "SufficientStats",
    "TLearner",
    "TestResult",
    "ThompsonSampling",
    "Variant",
    "VariantResult",
    "analyze_experiment",
    "arms_from_frame",
    "arms_from_users",
    "bayes_means",
    "bayes_proportions",
    "chi_square_test",
    "doubly_robust",
    "evaluate_obd",
    "horizon_gate",
    "ipw",
    "lift",
    "load_experiment",
    "mde_proportion",
    "msprt",
    "plan_mean",
    "plan_proportion",
    "qini_coefficient",
    "qini_curve",
    "sample_ratio_mismatch",
    "segment_mde_table",
    "simulate",
    "snipw",
    "treatment_effects",
    "two_proportion_ztest",
    "uplift_at_k",
    "welch_ttest",
]
