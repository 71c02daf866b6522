# ruff: noqa: F811 - the spark fixture imported from engines_support is redefined as argument
"""DuckDB/Spark parity: the same trait and segment definitions give identical results.

One Spark local session serves the module. Every trait kind and every segment condition
type runs on DuckDB (the store's batch path) and on Spark (the same sqlglot trees rendered
for Spark); trait values must agree (floats to 1e-9) and memberships must be identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engines_support import (  # noqa: F401 - pytest fixture
    AS_OF,
    N_PROFILES,
    TRAITS,
    parity_segments,
    parity_store,
    segments_module,
    settings,
    spark,
    trait_differences,
)

from microseg.engines.spark import SparkEngine, SparkRun
from microseg.segments import compute_segments
from microseg.segments.ast import (
    LEAF_TYPES,
    VALUE_OPS,
    All,
    Any_,
    EventCond,
    GeoCond,
    Not,
    Quantile,
    RecencyCond,
    SequenceCond,
    TraitCond,
    walk,
)
from microseg.segments.membership import members
from microseg.traits import compute_traits, load_traits, trait_frame
from microseg.traits.model import KIND_MODELS

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def parity(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Both engines run on the planted store once; the tests compare their results."""
    cfg = settings()
    store = parity_store(cfg)
    traitset = load_traits(TRAITS, cfg.taxonomy)
    segs = parity_segments()
    engine = SparkEngine(spark, cfg, tmp_path_factory.mktemp("spark"))
    engine.load_store(store)  # before DuckDB writes its traits table: Spark computes its own
    run = engine.run(traitset, segs, AS_OF)
    compute_traits(store, cfg, traitset, AS_OF)
    report = compute_segments(store, cfg, segs, AS_OF)
    assert {r.status for r in report.runs} == {"ok"}
    yield {
        "store": store,
        "traitset": traitset,
        "segments": segs,
        "run": run,
        "duck_traits": trait_frame(store),
        "duck_members": {name: members(store, name) for name in segs},
        "spark_members": run.member_sets(),
    }
    store.close()


def test_definitions_cover_every_kind_and_condition() -> None:
    traitset = load_traits(TRAITS, settings().taxonomy)
    assert {t.kind for t in traitset} == set(KIND_MODELS)
    nodes = [node for seg in parity_segments().values() for _, node in walk(seg.rule)]
    assert set(LEAF_TYPES) | {All, Any_, Not} <= {type(n) for n in nodes}
    traits = [n for n in nodes if isinstance(n, TraitCond)]
    assert {t.op for t in traits} == set(VALUE_OPS)
    assert any(isinstance(t.value, Quantile) for t in traits)
    assert any(t.trait.startswith("score.") for t in traits)
    events = [n for n in nodes if isinstance(n, EventCond)]
    assert {e.aggregate for e in events} == {"count", "sum", "avg", "min", "max", "count_distinct"}
    assert any(e.last for e in events) and any(e.since and e.until for e in events)
    assert any(e.where for e in events) and any(e.per_session for e in events)
    assert any(e.same and not e.per_session for e in events)
    sequences = [n for n in nodes if isinstance(n, SequenceCond)]
    assert {s.followed for s in sequences} == {True, False}
    recency = [n for n in nodes if isinstance(n, RecencyCond)]
    assert {(r.newer_than is not None, r.or_never) for r in recency} == {
        (True, False),
        (False, False),
        (False, True),
    }
    geo = [n.geo for n in nodes if isinstance(n, GeoCond)]
    assert any(g.lat is not None for g in geo) and any(g.store for g in geo)
    assert any(g.stores for g in geo)


def test_trait_values_identical(parity: dict[str, Any]) -> None:
    duck, spark_traits = parity["duck_traits"], parity["run"].trait_frame()
    assert len(duck) == N_PROFILES - 1  # the merged profile has no traits on either engine
    problems = trait_differences(duck, spark_traits)
    assert not problems, "\n".join(problems[:20])
    # the planted data exercises every output: each column has values (not all missing)
    for column in duck.columns:
        assert duck[column].notna().any(), column


def test_memberships_identical(parity: dict[str, Any]) -> None:
    duck, spark_members = parity["duck_members"], parity["spark_members"]
    assert set(spark_members) == set(duck)
    differ = {
        name: (sorted(duck[name] - spark_members[name]), sorted(spark_members[name] - duck[name]))
        for name in duck
        if duck[name] != spark_members[name]
    }
    assert not differ, differ
    # no vacuous parity: every segment has members and leaves some live profiles out
    for name, found in duck.items():
        assert 0 < len(found) < N_PROFILES - 1, (name, len(found))
    assert parity["run"].sizes == {name: len(found) for name, found in duck.items()}


def test_planted_boundaries(parity: dict[str, Any]) -> None:
    """Known cases: merged profile excluded; ts exactly at as_of - 7d is outside last: 7d."""
    duck = parity["duck_members"]
    assert all("u002" not in found for found in duck.values())
    assert "u148" in duck["r_newer"]  # a purchase exactly at as_of counts
    spark_traits = parity["run"].trait_frame().set_index("profile_id")
    assert spark_traits.loc["u149", "days_since_purchase"] <= 7


def test_golden_template_segments_on_spark(spark: Any, tmp_path: Path) -> None:
    """The example segments on the hand-built fixture: Spark gives the golden members."""
    sup = segments_module("segments_support")
    golden = segments_module("test_segment_membership")
    cfg = sup.template_settings()
    store = sup.build_store(
        cfg, sup.fixed_events(), sup.fixed_traits(), sup.fixed_consents(), sup.fixed_scores()
    )
    segs = golden.all_templates()
    engine = SparkEngine(spark, cfg, tmp_path)
    engine.load_store(store, with_traits=True)
    run: SparkRun = engine.run(None, segs, sup.AS_OF)
    got = run.member_sets()
    frame = run.membership_frame()
    assert list(frame.columns) == ["segment", "profile_id"] and len(frame) == sum(
        run.sizes.values()
    )
    for name, expected in golden.EXPECTED.items():
        assert got[name] == expected, name
    from microseg.segments.evaluate import bucket_of

    holdout = {f"p{i}" for i in range(1, 11) if bucket_of(f"p{i}", "holdout-2024", 100) < 10}
    assert got["holdout"] == holdout
    store.close()
