"""``python benchmarks/soak_report.py DIAG.jsonl [--warmup 180]``: a soak's memory, sample by sample.

Reads the JSON lines ``bench_soak.py --diag`` collected in the server (see
:mod:`microseg.bench.soak_diag`) and prints one row per sample: RSS, the Python heap (allocated
blocks, GC objects, tracemalloc when on), glibc in-use / free, DuckDB's buffer memory, and the
sizes of the structures that could grow (serving profiles, evaluator events / heap / timers),
then the plateau figures (slope after the warm-up and over its last half, MiB/min; also RSS
minus DuckDB's buffer cache) and the server's malloc_trim figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from microseg.bench.soak_diag import read_samples, summarize

COLUMNS = (
    ("t", lambda r: r["t"], "{:>6.0f}"),
    ("rss", lambda r: r["rss_mib"], "{:>6.0f}"),
    ("trim", lambda r: r.get("rss_after_trim_mib"), "{:>6.0f}"),
    ("pyblk_k", lambda r: r["py_blocks"] / 1000, "{:>8.0f}"),
    ("gcobj_k", lambda r: r["gc_objects"] / 1000, "{:>8.0f}"),
    ("tracem", lambda r: r.get("tracemalloc_mib"), "{:>7.1f}"),
    ("pyarena", lambda r: r["pymalloc"]["arenas"], "{:>7.0f}"),
    ("pyused", lambda r: r["pymalloc"]["allocated_mib"], "{:>7.0f}"),
    ("anon", lambda r: r["smaps"]["anonymous"], "{:>6.0f}"),
    ("lazy", lambda r: r["smaps"].get("lazyfree"), "{:>5.0f}"),
    ("m_used", lambda r: r["malloc"]["in_use"], "{:>7.0f}"),
    ("m_free", lambda r: r["malloc"]["free"], "{:>7.0f}"),
    ("m_mmap", lambda r: r["malloc"]["mmapped"], "{:>7.0f}"),
    ("duck", lambda r: r["duckdb"]["memory_mib"], "{:>6.0f}"),
    ("thr", lambda r: r["threads"], "{:>4d}"),
    ("prof", lambda r: r["sizes"]["serving.profiles"], "{:>7d}"),
    ("rt_ev", lambda r: r["sizes"]["rt.events_kept"], "{:>7d}"),
    ("heap", lambda r: r["sizes"]["rt.heap"], "{:>7d}"),
    ("due", lambda r: r["sizes"]["rt.due"], "{:>7d}"),
    ("leaf", lambda r: r["sizes"]["rt.leaf_state"], "{:>7d}"),
)


def cell(row: dict[str, Any], get: Any, fmt: str) -> str:
    width = len(fmt.format(0))
    try:
        value = get(row)
    except (KeyError, TypeError):
        value = None
    return fmt.format(value) if value is not None else " " * (width - 1) + "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("diag", type=Path)
    ap.add_argument("--warmup", type=float, default=180.0)
    args = ap.parse_args()
    rows = [r for r in read_samples(args.diag) if "t" in r]
    print(" ".join(f"{name:>{len(fmt.format(0))}}" for name, _, fmt in COLUMNS))
    for row in rows:
        print(" ".join(cell(row, get, fmt) for _, get, fmt in COLUMNS))
    summary = summarize(rows, args.warmup)
    for key in ("sizes_after_warmup", "sizes_end", "duckdb_end"):
        print(f"{key}: {json.dumps(summary.pop(key, None), default=str)}")
    trims = [r["server_trim"] for r in rows if r.get("server_trim")]
    if trims:  # the server's own malloc_trim thread (api/memory.py), at the last sample
        print(f"server malloc_trim: {json.dumps(trims[-1])}")
    keepers = [r["cache_keeper"] for r in rows if r.get("cache_keeper")]
    if keepers:
        print(f"server cache keeper: {json.dumps(keepers[-1])}")
    print("plateau (MiB or thousands; slopes per minute):")
    for name, figures in summary.items():
        print(f"  {name:<20} {json.dumps(figures)}")


if __name__ == "__main__":
    main()
