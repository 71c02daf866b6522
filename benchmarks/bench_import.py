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

``--floor`` also times DuckDB alone copying the same file into a table of a fresh database
file (``CREATE TABLE ... AS SELECT * FROM read_parquet(...)``: no validation, ids, sessions or
dedup, the same memory limit): the most any import into this store can reach on the machine.
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
from typing import Any

CHILD = r"""
import json, resource, sys, time
from microseg.workspace import Workspace
path, root, limit, profile = sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4] == "1"
ws = Workspace.init(root, memory_limit=limit)
stages = {}
if profile:
    class Timed:
        # Every statement of the import: wall and process CPU (all DuckDB threads), by the
        # microseg function that ran it and the statement's first words.
        def __init__(self, con):
            self._con = con
        def __getattr__(self, name):
            return getattr(self._con, name)
        def execute(self, text, params=None):
            frame, where = sys._getframe(1), "?"
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod.startswith("microseg.") and not mod.startswith("microseg.store"):
                    where = mod.rsplit(".", 1)[-1] + "." + frame.f_code.co_name
                    break
                frame = frame.f_back
            head = " ".join(str(text).split())[:48]
            c, t = time.process_time(), time.perf_counter()
            out = self._con.execute(text, params or [])
            s = stages.setdefault(where + " | " + head, [0.0, 0.0, 0])
            s[0] += time.perf_counter() - t; s[1] += time.process_time() - c; s[2] += 1
            return out
    ws.store.con = Timed(ws.store.con)
c0 = time.process_time(); t0 = time.perf_counter()
r = ws.import_events(path)
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
import_stages = {k: list(v) for k, v in stages.items()}
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
                  "stages": sorted(([k, *v] for k, v in import_stages.items()), key=lambda s: -s[2]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


FLOOR = r"""
import json, sys, time, duckdb
path, db, limit = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect(db, config={"memory_limit": limit} if limit else {})
c0, t0 = time.process_time(), time.perf_counter()
con.execute("CREATE TABLE copied AS SELECT * FROM read_parquet(?)", [path])
con.execute("CHECKPOINT")
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
rows = con.execute("SELECT count(*) FROM copied").fetchone()[0]
print(json.dumps({"rows": rows, "wall_s": wall, "cpu_s": cpu}))
"""


def floor_copy(path: Path, workdir: Path, memory_limit: str) -> dict[str, float]:
    """DuckDB alone copying ``path`` into a table of a fresh database file (see --floor)."""
    db = workdir / f"floor_{path.stem}.duckdb"
    db.unlink(missing_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", FLOOR, str(path), str(db), memory_limit],
        capture_output=True,
        text=True,
        check=False,
    )
    db.unlink(missing_ok=True)
    Path(str(db) + ".wal").unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    out: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def ensure_file(workdir: Path, n: int, seed: int) -> Path:
    """The cached synthetic file for ``n`` events (n / 10 profiles, 90 days)."""
    path = workdir / f"synth_{n}_s{seed}.parquet"
    if not path.exists():
        from microseg.synth import generate_events

        t0 = time.perf_counter()
        generate_events(path, n, max(n // 10, 1), seed=seed)
        print(f"generated {n:,} events in {time.perf_counter() - t0:.1f}s -> {path}", flush=True)
    return path


def run_one(path: Path, workdir: Path, memory_limit: str, profile: bool) -> dict[str, object]:
    root = workdir / f"project_{path.stem}"
    shutil.rmtree(root, ignore_errors=True)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(root), memory_limit, "1" if profile else "0"],
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


def print_stages(stages: list[list[Any]], wall: float, cpu: float) -> None:
    """The statements that cost most CPU, then what the statements do not account for
    (Python between them: building SQL, pyarrow metadata reads)."""
    rows = [(str(s[0]), float(s[1]), float(s[2]), int(s[3])) for s in stages]
    print(f"{'':>12}  {'wall s':>7} {'CPU s':>7} {'n':>4}  statement", flush=True)
    for name, w, c, n in rows:
        if w >= 0.05 or c >= 0.05:
            print(f"{'':>12}  {w:7.2f} {c:7.2f} {n:>4}  {name}")
    sw, sc = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'':>12}  {wall - sw:7.2f} {cpu - sc:7.2f}       (outside statements)", flush=True)


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
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also time DuckDB alone copying the file into a table (the machine's ceiling)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="time every statement of the import (wall and CPU-s) and print the costliest",
    )
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        path = ensure_file(args.workdir, n, args.seed)
        load_before = os.getloadavg()[0]
        r = run_one(path, args.workdir, args.memory_limit, args.profile)
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
        if args.profile:
            print_stages(r["stages"], wall, cpu)  # type: ignore[arg-type]
        if args.floor:
            f = floor_copy(path, args.workdir, args.memory_limit)
            r["floor"] = f
            print(
                f"{'':>12}  DuckDB's own copy of the file: {f['wall_s']:.1f}s wall "
                f"({n / f['wall_s']:,.0f} ev/s), {f['cpu_s']:.1f}s CPU; the import takes "
                f"{wall / f['wall_s']:.1f}x its time",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
