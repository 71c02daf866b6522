"""Prediction: propensity models, CLV, online learning, learned engagement, model registry.

FEATURES M1–M7, S8, P4.
"""

from microseg.predict.clv import (
    BetaGeoModel,
    GammaGammaModel,
    customer_lifetime_value,
    rank_segments_by_value,
    rfm_summary,
)
from microseg.predict.engagement import LearnedEngagementScore, weighted_engagement_score
from microseg.predict.features import (
    TARGETS,
    TemporalSplit,
    label_window,
    point_in_time_features,
    temporal_split,
    training_frame,
)
from microseg.predict.online import OnlinePropensity
from microseg.predict.propensity import (
    ALGORITHMS,
    Evaluation,
    InsufficientDataWarning,
    PropensityModel,
    SegmentAdaptation,
    adapt_to_segment,
    cross_validate,
    evaluate,
    explain,
    tune_threshold,
)
from microseg.predict.registry import (
    RegisteredModel,
    list_models,
    load_model,
    read_scores,
    register_model,
    store_cluster_membership,
    store_scores,
)

__all__ = [
    "ALGORITHMS",
    "TARGETS",
    "BetaGeoModel",
    "Evaluation",
    "GammaGammaModel",
    "InsufficientDataWarning",
    "LearnedEngagementScore",
    "OnlinePropensity",
    "PropensityModel",
    "RegisteredModel",
    "SegmentAdaptation",
    "TemporalSplit",
    "adapt_to_segment",
    "cross_validate",
    "customer_lifetime_value",
    "evaluate",
    "explain",
    "label_window",
    "list_models",
    "load_model",
    "point_in_time_features",
    "rank_segments_by_value",
    "read_scores",
    "register_model",
    "rfm_summary",
    "store_cluster_membership",
    "store_scores",
    "temporal_split",
    "training_frame",
    "tune_threshold",
    "weighted_engagement_score",
]
