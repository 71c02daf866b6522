"""Assignment: deterministic, balanced, sticky when variants are added (Hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from microseg.errors import DefinitionError
from microseg.experiments.assignment import Experiment, Variant, load_experiment, unit_hash

keys = st.text(min_size=1, max_size=12)
pids = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(key=keys, ids=pids)
def test_deterministic(key: str, ids: list[str]) -> None:
    exp = Experiment.ab(key, "control", "tailored", "generic")
    first = [exp.assign(p) for p in ids]
    again = [Experiment.ab(key, "control", "tailored", "generic").assign(p) for p in ids]
    assert first == again


@settings(max_examples=40, deadline=None)
@given(key=keys, ids=pids, new=st.text(min_size=1, max_size=6))
def test_adding_a_variant_only_moves_profiles_to_the_new_variant(
    key: str, ids: list[str], new: str
) -> None:
    old = Experiment.ab(key, "a", "b", weights=[1, 3])
    if new in ("a", "b"):
        return
    grown = Experiment(key, (*old.variants, Variant(new, 2.0)))
    for p in ids:
        after = grown.assign(p)
        assert after in (old.assign(p), new)


@settings(max_examples=15, deadline=None)
@given(key=keys, w=st.lists(st.integers(1, 5), min_size=2, max_size=4))
def test_balanced_within_tolerance(key: str, w: list[int]) -> None:
    exp = Experiment(key, tuple(Variant(f"v{i}", float(x)) for i, x in enumerate(w)))
    n = 4000
    counts = exp.assign_many(str(i) for i in range(n))["variant"].value_counts()
    observed = [int(counts.get(f"v{i}", 0)) for i in range(len(w))]
    expected = [x / sum(w) * n for x in w]
    # goodness of fit at a strict level: a true weighted split fails this 1 in 10^6 times
    assert sps.chisquare(observed, expected).pvalue > 1e-6


def test_holdout_is_independent_of_variants_and_has_its_share() -> None:
    a = Experiment.ab("tailoring", "tailored", "generic", holdout=0.1)
    b = Experiment.ab("tailoring", "tailored", "generic", "third", holdout=0.1)
    ids = [f"p{i}" for i in range(5000)]
    held_a = {p for p in ids if a.assign(p) == "holdout"}
    held_b = {p for p in ids if b.assign(p) == "holdout"}
    assert held_a == held_b
    assert abs(len(held_a) / 5000 - 0.1) < 0.015
    assert a.expected_shares() == pytest.approx({"tailored": 0.45, "generic": 0.45, "holdout": 0.1})


def test_factorial_is_full_and_factors_independent() -> None:
    exp = Experiment.factorial("mvt", {"subject": ["short", "long"], "image": ["a", "b", "c"]})
    assert len(exp.variants) == 6
    df = exp.assign_many(str(i) for i in range(6000))
    assert set(df["variant"]) == {v.name for v in exp.variants}
    table = df.groupby(["subject", "image"]).size().unstack()
    chi = sps.chi2_contingency(table.to_numpy())
    assert chi.pvalue > 1e-4  # independence of the two factors
    assert df["subject"].value_counts(normalize=True).min() > 0.45


def test_unit_hash_range_and_salt() -> None:
    u = unit_hash("exp", "v", "p1")
    assert 0 < u < 1
    assert unit_hash("exp2", "v", "p1") != u


def test_bad_experiments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Experiment.ab("k", "a", "a")
    with pytest.raises(ValueError, match="weights"):
        Experiment.ab("k", "a", "b", weights=[1, 0])
    with pytest.raises(ValueError, match="control"):
        Experiment.ab("k", "a", "b", control="c")


def test_load_experiment_yaml(tmp_path: Path) -> None:
    good = tmp_path / "tailoring.yaml"
    good.write_text(
        "key: tailoring-q4\nvariants:\n  - name: generic\n  - name: tailored\n    weight: 2\n"
        "control: generic\nholdout: 0.05\nplanned_per_arm: 5000\n"
    )
    spec = load_experiment(str(good))
    exp = spec.to_experiment()
    assert exp.control == "generic" and exp.variants[1].weight == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: x\nvariants:\n  - name: a\n    wieght: 2\n")
    with pytest.raises(DefinitionError) as info:
        load_experiment(str(bad))
    assert "bad.yaml:4" in str(info.value)
