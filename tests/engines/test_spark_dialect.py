"""The Spark rewrites of compiled trees (pure sqlglot: runs without pyspark or Java)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import pytest
from engines_support import AS_OF, TRAITS, parity_segments, settings
from sqlglot import exp

from microseg.engines import spark as spark_engine
from microseg.engines.dialect import UnsupportedOnSpark, spark_sql, to_spark
from microseg.segments.compiler import bucket_expr, compile_segment, quantile_threshold
from microseg.store import sql as q
from microseg.traits import load_traits
from microseg.traits.compiler import compile_traits


def test_epoch_keeps_fractional_seconds() -> None:
    tree = exp.TimeToUnix(this=q.col("ts"))
    assert spark_sql(tree) == "(CAST(UNIX_MICROS(`ts`) AS DOUBLE) / 1000000)"
    assert tree.sql(dialect="spark") == "UNIX_TIMESTAMP(`ts`)"  # what sqlglot alone gives


def test_quantile_cont_becomes_percentile() -> None:
    from microseg.segments.compiler import CompileContext

    tree = quantile_threshold("monetary", 0.9, CompileContext(AS_OF))
    assert "PERCENTILE(`t`.`monetary`, 0.9)" in spark_sql(tree)
    assert "QUANTILE_CONT" in tree.sql(dialect="duckdb")  # the DuckDB tree is unchanged


def test_ordered_array_agg_is_sorted_collect_list() -> None:
    order = exp.Order(
        this=q.col("_tag"), expressions=[exp.Ordered(this=q.col("_rn"), nulls_first=False)]
    )
    text = spark_sql(exp.ArrayAgg(this=order))
    assert text == (
        "TRANSFORM(SORT_ARRAY(COLLECT_LIST(STRUCT(`_rn` AS k0, `_tag` AS v))), x -> x.v)"
    )
    desc = exp.Order(this=q.col("_tag"), expressions=[exp.Ordered(this=q.col("_rn"), desc=True)])
    with pytest.raises(UnsupportedOnSpark):
        to_spark(exp.ArrayAgg(this=desc))


def test_bucket_hex_prefix_uses_conv() -> None:
    tree = bucket_expr(q.col("profile_id"), "salt", 100)
    text = spark_sql(tree)
    assert "CONV(SUBSTRING(MD5(" in text and "'0x'" not in text
    assert "'0x' ||" in tree.sql(dialect="duckdb")  # DuckDB keeps its own (equal) form


def test_to_spark_copies_and_ignores_other_casts() -> None:
    tree = exp.cast(q.lit("12"), "BIGINT")
    assert to_spark(tree) is not tree and spark_sql(tree) == "CAST('12' AS BIGINT)"


def test_whole_definition_set_renders_for_spark() -> None:
    """Every compiled tree renders; no DuckDB-only construct survives the rewrite."""
    cfg = settings()
    traitset = load_traits(TRAITS, cfg.taxonomy)
    texts = [spark_sql(compile_traits(traitset, AS_OF))]
    segs = parity_segments()
    texts += [spark_sql(compile_segment(s, AS_OF, segments=segs)) for s in segs.values()]
    for text in texts:
        for duck_only in ("EPOCH(", "QUANTILE_CONT", "PERCENTILE_CONT", "'0x'", "QUALIFY"):
            assert duck_only not in text
        assert "UNIX_TIMESTAMP(" not in text and "ARRAY_AGG" not in text


def test_spark_type_names() -> None:
    assert spark_engine.spark_type_name("array<string>") == "VARCHAR[]"
    assert spark_engine.spark_type_name("bigint") == "BIGINT"
    assert spark_engine.spark_type_name("decimal(10,2)") == "DECIMAL(10,2)"
    assert spark_engine.spark_type_name("timestamp_ntz") == "TIMESTAMP"


def test_unavailable_reason_names_missing_java(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyspark")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "Java" in (spark_engine.unavailable_reason() or "")
    with pytest.raises(spark_engine.SparkUnavailable, match="Java"):
        spark_engine.local_session()
    monkeypatch.setenv("JAVA_HOME", str(Path("/usr/lib/jvm/does-not-exist")))
    assert spark_engine.unavailable_reason() is not None


def test_as_of_is_explicit_in_every_tree() -> None:
    """No engine clock (CURRENT_TIMESTAMP / NOW) leaks into the rendered SQL."""
    when = datetime(2024, 1, 2, 3, 4, 5)
    segs = parity_segments()
    for seg in segs.values():
        text = spark_sql(compile_segment(seg, when, segments=segs))
        assert "CURRENT_TIMESTAMP" not in text.upper() and "NOW()" not in text.upper()
