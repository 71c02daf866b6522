"""Benchmark the Spark engine against DuckDB on the parity definitions (every trait kind,
42 segments covering every condition type).

    python benchmarks/bench_spark.py [--scale 1] [--runs 2]

``--scale k`` multiplies the planted events (7k x k) and profiles (160 x k is NOT changed:
the parity data keeps its profiles; events per profile grow). For each engine it prints wall
time of traits and segments; for Spark also session start, table export and the CPU time the
JVM used (wall time on a loaded shared machine is pessimistic; JVM CPU / cores is the
estimate for an idle machine). The first Spark run includes JVM warm-up (JIT, class loading).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "engines"))

from engines_support import (  # type: ignore[import-not-found]
    AS_OF,
    TRAITS,
    parity_segments,
    parity_store,
    settings,
)

from microseg.engines.spark import SparkEngine, local_session
from microseg.segments import compute_segments
from microseg.traits import compute_traits, load_traits


def _jvm_cpu(spark: Any) -> float:
    """CPU seconds the Spark JVM (driver + local executors) has used so far."""
    import os

    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _scaled_store(scale: int) -> Any:
    cfg = settings()
    store = parity_store(cfg)
    for k in range(1, scale):  # copies of the events shifted by k minutes, new event ids
        store.execute(
            "INSERT INTO events SELECT * REPLACE (event_id || '-' || ?::VARCHAR AS event_id,"
            " ts - to_minutes(?::BIGINT) AS ts) FROM events WHERE event_id NOT LIKE '%-%'",
            [k, k],
        )
    return cfg, store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--codegen", action="store_true", help="whole-stage codegen on")
    args = parser.parse_args()
    cfg, store = _scaled_store(args.scale)
    n_events = store.scalar("SELECT count(*) FROM events")
    traitset = load_traits(TRAITS, cfg.taxonomy)
    segs = parity_segments()
    print(f"{n_events:,} events, {len(traitset)} traits, {len(segs)} segments")

    t0 = time.perf_counter()
    spark = local_session(codegen=args.codegen)
    print(f"spark session start: {time.perf_counter() - t0:.1f}s (spark {spark.version})")
    with tempfile.TemporaryDirectory() as scratch:
        engine = SparkEngine(spark, cfg, Path(scratch))
        t0 = time.perf_counter()
        engine.load_store(store)
        print(f"spark export + register tables: {time.perf_counter() - t0:.1f}s")
        for run in range(args.runs):
            cpu0, t0 = _jvm_cpu(spark), time.perf_counter()
            result = engine.run(traitset, segs, AS_OF)
            wall, cpu = time.perf_counter() - t0, _jvm_cpu(spark) - cpu0
            print(
                f"spark run {run + 1}: traits {result.timings['traits']:.1f}s, segments"
                f" {result.timings['segments']:.1f}s, total {wall:.1f}s wall,"
                f" JVM CPU {cpu:.1f}s (~{cpu / 2:.1f}s on 2 idle cores)"
            )
    for run in range(args.runs):
        t0 = time.perf_counter()
        compute_traits(store, cfg, traitset, AS_OF)
        t1 = time.perf_counter()
        compute_segments(store, cfg, segs, AS_OF)
        t2 = time.perf_counter()
        print(f"duckdb run {run + 1}: traits {t1 - t0:.2f}s, segments {t2 - t1:.2f}s")
    spark.stop()
    store.close()


if __name__ == "__main__":
    main()
