"""Import speed benchmark: synthetic Parquet -> fresh on-disk store.

Generates (once, cached in --workdir) 1 M and 10 M synthetic events with ``microseg.synth``,
then imports each file into a fresh on-disk project in a child process and reports
events/s (wall clock and per CPU second), the child's peak RSS, the 1-minute load average
before and after (the machine is shared: wall figures under load are pessimistic) and a
digest of what was stored (events with their sessions and ids, identities, profiles), to
check that a faster import stores the same thing.

    python benchmarks/bench_import.py                       # 1 M and 10 M
    python benchmarks/bench_import.py --sizes 1000000 --memory-limit 2GB --json out.json

Targets (issue "The spine"): >= 1 M events/s from Parquet on 2 cores; peak RSS <= 3 GB at 10 M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from microseg.workspace import Workspace
path, root, limit = sys.argv[1], sys.argv[2], sys.argv[3] or None
ws = Workspace.init(root, memory_limit=limit)
c0 = time.process_time(); t0 = time.perf_counter()
r = ws.import_events(path)
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
counts = ws.counts()
digest = {
    "events": ws.store.scalar("SELECT bit_xor(hash(event_id, event_type, ts, user_id, id_key,"
                              " session_id, product_id, category, price, quantity)) FROM events"),
    "identities": ws.store.scalar("SELECT bit_xor(hash(id_key, profile_id, first_seen, last_seen,"
                                  " linked_by)) FROM identities"),
    "profiles": ws.store.scalar("SELECT bit_xor(hash(profile_id)) FROM profiles"),
    "sessions": ws.store.scalar("SELECT count(DISTINCT session_id) FROM events"),
}
ws.close()
print(json.dumps({"rows_read": r.rows_read, "inserted": r.inserted, "quarantined": r.quarantined,
                  "duplicates": r.duplicates, "wall_s": wall, "cpu_s": cpu, "counts": counts,
                  "digest": {k: str(v) for k, v in digest.items()},
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def ensure_file(workdir: Path, n: int, seed: int) -> Path:
    """The cached synthetic file for ``n`` events (n / 10 profiles, 90 days)."""
    path = workdir / f"synth_{n}_s{seed}.parquet"
    if not path.exists():
        from microseg.synth import generate_events

        t0 = time.perf_counter()
        generate_events(path, n, max(n // 10, 1), seed=seed)
        print(f"generated {n:,} events in {time.perf_counter() - t0:.1f}s -> {path}", flush=True)
    return path


def run_one(path: Path, workdir: Path, memory_limit: str) -> dict[str, object]:
    root = workdir / f"project_{path.stem}"
    shutil.rmtree(root, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(root), memory_limit],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
    out: dict[str, object] = json.loads(line)
    shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "microseg-bench-import",
    )
    ap.add_argument(
        "--memory-limit", default="2GB", help="DuckDB memory_limit of the store ('' = default)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        path = ensure_file(args.workdir, n, args.seed)
        load_before = os.getloadavg()[0]
        r = run_one(path, args.workdir, args.memory_limit)
        wall, cpu = float(r["wall_s"]), float(r["cpu_s"])  # type: ignore[arg-type]
        r.update(
            {
                "events": n,
                "events_per_s": n / wall,
                "events_per_cpu_s": n / cpu,
                "load_avg_1m": os.getloadavg()[0],
                "load_avg_1m_before": load_before,
                "memory_limit": args.memory_limit,
            }
        )
        results.append(r)
        print(
            f"{n:>12,} events: {wall:7.1f}s wall ({n / wall:>10,.0f} ev/s), {cpu:7.1f}s CPU "
            f"({n / cpu:>10,.0f} ev/CPU-s), peak RSS {float(r['peak_rss_mb']):,.0f} MB, "  # type: ignore[arg-type]
            f"stored {r['inserted']:,}, load {load_before:.1f} -> {r['load_avg_1m']:.1f}",
            flush=True,
        )
        print(f"{'':>12}  digest {r['digest']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
