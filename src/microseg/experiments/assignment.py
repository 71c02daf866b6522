"""Deterministic, sticky assignment of profiles to experiment variants.

Design choice — *weighted rendezvous hashing* (highest random weight):
each (experiment key, variant name, profile id) is hashed with BLAKE2b to a uniform
``u ∈ (0, 1)``; the profile goes to the variant with the smallest ``-ln(u) / weight``.
This is an exponential race, so variant ``v`` wins with probability ``w_v / Σw`` exactly, and:

* it is deterministic and sticky (no state, the same inputs give the same variant);
* **adding a variant never moves a profile between existing variants** — a profile either
  keeps its variant or moves to the new one (its score for old variants is unchanged);
  removing a variant only moves that variant's profiles;
* different experiments are independent because the key salts the hash.

A holdout (e.g. the "generic" group that keeps receiving untailored content) is drawn first
from a separate hash, so changing variants never changes who is held out. Multivariate tests
assign each factor independently (salted by factor name) giving the full factorial.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from microseg.config.yamlio import load_document, validate_model

_SCALE = float(2**64)


def unit_hash(*parts: str) -> float:
    """Uniform number in (0, 1) from the BLAKE2b hash of the joined parts."""
    h = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return (int.from_bytes(h, "big") + 0.5) / _SCALE


@dataclass(frozen=True)
class Variant:
    """A variant with a relative traffic weight."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Experiment:
    """An A/B/n experiment: key, variants, optional holdout share."""

    key: str
    variants: tuple[Variant, ...]
    holdout: float = 0.0
    holdout_name: str = "holdout"
    control: str | None = None
    factors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("experiment key must be non-empty")
        names = [v.name for v in self.variants]
        if len(names) < 1 and not self.factors:
            raise ValueError(f"experiment {self.key!r} needs at least one variant")
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.key!r} has duplicate variant names: {names}")
        if any(not (v.weight > 0 and math.isfinite(v.weight)) for v in self.variants):
            raise ValueError(
                f"variant weights must be positive, got {[v.weight for v in self.variants]}"
            )
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not a variant of {self.key!r}: {names}")

    @classmethod
    def ab(
        cls, key: str, *names: str, weights: Sequence[float] | None = None, **kw: object
    ) -> Experiment:
        """Shortcut: ``Experiment.ab("exp", "control", "tailored")``."""
        ws = list(weights) if weights is not None else [1.0] * len(names)
        return cls(key, tuple(Variant(n, w) for n, w in zip(names, ws, strict=True)), **kw)  # type: ignore[arg-type]

    @classmethod
    def factorial(
        cls, key: str, factors: Mapping[str, Sequence[str]], holdout: float = 0.0
    ) -> Experiment:
        """Multivariate experiment: every combination of factor levels is a cell."""
        fs = {k: tuple(v) for k, v in factors.items()}
        if not fs or any(len(v) < 2 for v in fs.values()):
            raise ValueError(f"each factor needs at least two levels, got {fs}")
        cells = tuple(Variant("|".join(c)) for c in itertools.product(*fs.values()))
        return cls(key, cells, holdout=holdout, factors=fs)

    def assign(self, profile_id: str) -> str:
        """Variant name (or the holdout name) for one profile."""
        pid = str(profile_id)
        if self.holdout > 0 and unit_hash(self.key, "__holdout__", pid) < self.holdout:
            return self.holdout_name
        if self.factors:
            return "|".join(
                _race(self.key + "/" + f, [Variant(lv) for lv in levels], pid)
                for f, levels in self.factors.items()
            )
        return _race(self.key, self.variants, pid)

    def assign_many(self, profile_ids: Iterable[str]) -> pd.DataFrame:
        """DataFrame(profile_id, variant [, one column per factor])."""
        ids = [str(p) for p in profile_ids]
        out = pd.DataFrame({"profile_id": ids, "variant": [self.assign(p) for p in ids]})
        if self.factors:
            parts = out["variant"].str.split("|", expand=True, regex=False)
            for i, f in enumerate(self.factors):
                out[f] = parts[i] if i in parts.columns else None
                out.loc[out["variant"] == self.holdout_name, f] = None
        return out

    def expected_shares(self) -> dict[str, float]:
        """Planned traffic share of each variant (and the holdout), for SRM checks."""
        total = sum(v.weight for v in self.variants)
        shares = {v.name: (1 - self.holdout) * v.weight / total for v in self.variants}
        if self.holdout > 0:
            shares[self.holdout_name] = self.holdout
        return shares


def _race(key: str, variants: Sequence[Variant], pid: str) -> str:
    best, best_score = variants[0].name, math.inf
    for v in variants:
        score = -math.log(unit_hash(key, v.name, pid)) / v.weight
        if score < best_score:
            best, best_score = v.name, score
    return best


# --------------------------------------------------------------------------- definitions


class VariantSpec(BaseModel):
    """A variant in an experiments/*.yaml file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)


class ExperimentSpec(BaseModel):
    """An experiments/*.yaml file.

    ``variants`` for A/B/n, or ``factors`` (name → levels) for a full-factorial test.
    """

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)
    variants: list[VariantSpec] = Field(default_factory=list)
    factors: dict[str, list[str]] = Field(default_factory=dict)
    control: str | None = None
    holdout: float = Field(default=0.0, ge=0, lt=1)
    holdout_name: str = "holdout"
    planned_per_arm: int | None = Field(default=None, gt=0)
    metric: str = "conversion"

    @model_validator(mode="after")
    def _one_design(self) -> ExperimentSpec:
        if bool(self.variants) == bool(self.factors):
            raise ValueError("give either 'variants' or 'factors'")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate variant names: {names}")
        if self.control is not None and self.variants and self.control not in names:
            raise ValueError(f"control {self.control!r} is not one of the variants {names}")
        return self

    def to_experiment(self) -> Experiment:
        if self.factors:
            return Experiment.factorial(self.key, self.factors, holdout=self.holdout)
        return Experiment(
            self.key,
            tuple(Variant(v.name, v.weight) for v in self.variants),
            holdout=self.holdout,
            holdout_name=self.holdout_name,
            control=self.control,
        )


def load_experiment(path: str) -> ExperimentSpec:
    """Read and validate an experiment definition (errors carry file:line:col)."""
    return validate_model(ExperimentSpec, load_document(path))
