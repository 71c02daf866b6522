"""Small-import cost: what the HTTP collector's importer pays per spool segment.

The collector imports each sealed spool segment (JSON Lines, ~1,600 events at 2,000 ev/s)
through the same pipeline as files, in the server process: its Python work holds the GIL that
request threads need, and its garbage feeds the cyclic GC. This imports ``--segments``
segments of ``--events`` events (after ``--warm`` unmeasured ones) into a fresh on-disk
project and reports wall and CPU milliseconds per import; ``--profile`` also prints the top
functions by cumulative time (cProfile roughly doubles the figures).

    python benchmarks/bench_spool_import.py [--segments 40] [--events 1600] [--profile]

Baseline: stop 11 code, 408 ms per 1,600-event segment under cProfile (202 ms after building
the stage SELECT without deep copies).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

import orjson
from bench_soak import batch_events

from microseg.api.collector import SOURCE_PREFIX, SPEC
from microseg.workspace import Workspace


def segment(directory: Path, k: int, events: int) -> Path:
    """A spool-shaped segment: the soak's batch ``k`` (same event mix and users)."""
    path = directory / f"seg-{k:06d}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in batch_events(k, events, None)))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segments", type=int, default=40)
    ap.add_argument("--events", type=int, default=1600)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="microseg-spool-import-"))
    Workspace.init(tmp / "proj", "bench").close()
    with Workspace.open(tmp / "proj") as ws:
        for k in range(args.warm):
            ws.import_events(segment(tmp, k, args.events), source=SOURCE_PREFIX + str(k), spec=SPEC)
        paths = [segment(tmp, k, args.events) for k in range(args.warm, args.warm + args.segments)]
        profiler = cProfile.Profile() if args.profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        for path in paths:
            ws.import_events(path, source=SOURCE_PREFIX + path.stem, spec=SPEC)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = ws.store.scalar("SELECT count(*) FROM events")
    figures = {
        "segments": args.segments,
        "events_per_segment": args.events,
        "wall_ms_per_import": round(1000 * wall / args.segments, 1),
        "cpu_ms_per_import": round(1000 * cpu / args.segments, 1),
        "events_stored": stored,
        "profiled": args.profile,
    }
    print(json.dumps(figures, indent=2))
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
