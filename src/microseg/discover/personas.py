"""Cluster profiles, persona names and narratives where every sentence carries a number.

A cluster is described by what distinguishes it from the reference population (all profiles,
or the parent segment for sub-segments): for each feature, the cluster mean, the reference
mean, their ratio and the standardised difference (in reference standard deviations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Persona", "describe_clusters", "feature_profiles"]

# Words for well-known traits: (word when high, word when low).
_VOCAB: dict[str, tuple[str, str]] = {
    "recency": ("Lapsed", "Recent"),
    "recency_days": ("Lapsed", "Recent"),
    "frequency": ("Frequent", "Occasional"),
    "monetary": ("High-Value", "Low-Value"),
    "avg_value": ("Big-Basket", "Small-Basket"),
    "tenure_days": ("Long-Standing", "New"),
    "engagement": ("Engaged", "Disengaged"),
}


@dataclass(frozen=True)
class Persona:
    """A named cluster with its size and the numbers behind its description."""

    cluster: int
    name: str
    size: int
    share: float
    distinguishing: pd.DataFrame
    narrative: list[str]

    def text(self) -> str:
        """The narrative as one paragraph."""
        return " ".join(self.narrative)


def feature_profiles(features: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Mean of every feature per cluster (rows) plus an ``all`` row."""
    if not features.index.equals(labels.index):
        labels = labels.reindex(features.index)
    means = features.groupby(labels.to_numpy()).mean()
    means.index.name = "cluster"
    overall = features.mean().to_frame("all").T
    return pd.concat([means, overall])


def _word(feature: str, high: bool) -> str:
    if feature in _VOCAB:
        return _VOCAB[feature][0 if high else 1]
    label = feature.replace("_", " ")
    return f"High {label}" if high else f"Low {label}"


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}"
    return f"{x:.3g}"


def describe_clusters(
    features: pd.DataFrame,
    labels: pd.Series,
    *,
    reference: pd.DataFrame | None = None,
    top: int = 3,
    min_effect: float = 0.25,
) -> list[Persona]:
    """Personas for each cluster (noise label -1 is described as "Unclustered").

    ``reference`` is the population to compare with (default: ``features``). A feature
    distinguishes a cluster when its standardised mean difference is at least ``min_effect``.
    """
    ref = features if reference is None else reference
    if list(ref.columns) != list(features.columns):
        raise ValueError("reference must have the same columns as features")
    labels = labels.reindex(features.index)
    ref_mean = ref.mean()
    ref_std = ref.std(ddof=0).replace(0, np.nan)
    total = len(features)
    personas: list[Persona] = []
    used: dict[str, int] = {}
    for cluster in sorted(pd.unique(labels.dropna()).tolist()):
        members = features[labels == cluster]
        mean = members.mean()
        effect = ((mean - ref_mean) / ref_std).fillna(0.0)
        ratio = mean / ref_mean.replace(0, np.nan)
        table = pd.DataFrame(
            {"cluster_mean": mean, "reference_mean": ref_mean, "ratio": ratio, "effect_sd": effect}
        )
        table = table.reindex(effect.abs().sort_values(ascending=False).index)
        strong = table[table["effect_sd"].abs() >= min_effect].head(top)
        size = len(members)
        share = size / total if total else 0.0
        if int(cluster) < 0:
            name = "Unclustered"
        elif strong.empty:
            name = "Typical"
        else:
            name = " ".join(
                _word(str(f), bool(e > 0)) for f, e in strong["effect_sd"].head(2).items()
            )
        used[name] = used.get(name, 0) + 1
        if used[name] > 1:
            name = f"{name} {used[name]}"
        sentences = [
            f"{name} (cluster {int(cluster)}) holds {size:,} profiles, {share:.1%} of the {total:,} analysed."
        ]
        for feat, row in strong.iterrows():
            direction = "higher" if row["effect_sd"] > 0 else "lower"
            times = (
                f" ({_fmt(row['ratio'])}× the average)"
                if np.isfinite(row["ratio"]) and row["ratio"] > 0
                else ""
            )
            sentences.append(
                f"Average {str(feat).replace('_', ' ')} is {_fmt(row['cluster_mean'])} versus "
                f"{_fmt(row['reference_mean'])} overall{times}, {abs(row['effect_sd']):.1f} SD {direction}."
            )
        if strong.empty:
            sentences.append(
                f"No feature differs from the average by {min_effect:.2f} SD or more; the largest gap is "
                f"{abs(float(table['effect_sd'].iloc[0])):.2f} SD in {str(table.index[0]).replace('_', ' ')}."
            )
        personas.append(Persona(int(cluster), name, size, share, table, sentences))
    return personas
