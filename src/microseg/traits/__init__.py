"""Computed traits (P2-P4): declared in traits.yaml, compiled to SQL, stored in `traits`."""

from microseg.traits.compiler import compile_traits, render
from microseg.traits.compute import (
    TraitRunResult,
    compute_traits,
    compute_traits_for,
    load_project_traits,
    profile_traits,
    trait_catalog,
    trait_frame,
    validate_traits_file,
)
from microseg.traits.model import OutputColumn, TraitSet, load_traits, parse_expression

__all__ = [
    "OutputColumn",
    "TraitRunResult",
    "TraitSet",
    "compile_traits",
    "compute_traits",
    "compute_traits_for",
    "load_project_traits",
    "load_traits",
    "parse_expression",
    "profile_traits",
    "render",
    "trait_catalog",
    "trait_frame",
    "validate_traits_file",
]
