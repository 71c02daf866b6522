"""Discovery: clusters, personas and 2-D projections of profiles (FEATURES S5, S6)."""

from microseg.discover.clustering import (
    ALGORITHMS,
    SCALINGS,
    ClusterDiscovery,
    discover_subsegments,
)
from microseg.discover.personas import Persona, describe_clusters, feature_profiles
from microseg.discover.projection import METHODS, project_2d, save_projection

__all__ = [
    "ALGORITHMS",
    "METHODS",
    "SCALINGS",
    "ClusterDiscovery",
    "Persona",
    "describe_clusters",
    "discover_subsegments",
    "feature_profiles",
    "project_2d",
    "save_projection",
]
