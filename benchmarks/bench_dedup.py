"""Dedup cost against a large store: the event-id index versus reading every stored id.

Prefills an on-disk project with ``--prefill`` events whose ids are random UUIDs (what most
SDKs send), then imports ``--segments`` spool-shaped segments of ``--events`` new UUID events
and reports, per import:

* the claim in the event-id index (what the import pays now: DuckDB hashes the batch's ids,
  SQLite probes and inserts them), and the whole import's wall time;
* the baseline, stop-17 dedup: ``SELECT DISTINCT event_id FROM events WHERE event_id IN
  (batch)``, run on the same store and batch, which reads the whole ``event_id`` column,
  with the DuckDB buffer memory it leaves (measured from an emptied cache);
* the one-time rebuild of the index from ``events`` (a store from before the index).

    python benchmarks/bench_dedup.py [--prefill 3000000] [--segments 20] [--events 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from microseg.api.collector import SOURCE_PREFIX, SPEC
from microseg.store import event_ids
from microseg.workspace import Workspace

MIB = 1024 * 1024


def prefill(ws: Workspace, folder: Path, rows: int) -> float:
    """Store ``rows`` events with random UUID ids (a Parquet file written by DuckDB)."""
    path = folder / "prefill.parquet"
    ws.store.execute(
        "COPY (SELECT CAST(uuid() AS VARCHAR) AS event_id, 'page_view' AS event_type, "
        "TIMESTAMP '2026-01-01' + to_seconds(range // 100) AS timestamp, "
        "'u' || CAST(range % 100000 AS VARCHAR) AS user_id FROM range(?)) "
        "TO '" + str(path).replace("'", "''") + "' (FORMAT parquet)",
        [rows],
    )
    started = time.perf_counter()
    ws.import_events(path)
    path.unlink()
    return time.perf_counter() - started


def segment(folder: Path, k: int, events: int) -> Path:
    ts = "2026-06-01T00:00:00Z"
    rows = [
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "page_view",
            "timestamp": ts,
            "user_id": f"u{(k * events + i) % 100_000}",
        }
        for i in range(events)
    ]
    path = folder / f"seg-{k:05d}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefill", type=int, default=3_000_000)
    ap.add_argument("--segments", type=int, default=20)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="microseg-dedup-"))
    Workspace.init(folder / "proj", "dedup").close()
    with Workspace.open(folder / "proj") as ws:
        fill_seconds = prefill(ws, folder, args.prefill)
        claims: list[float] = []
        original = event_ids.EventIdIndex.claim

        def timed(self: event_ids.EventIdIndex, *a: object, **k: object) -> event_ids.Claim:
            started = time.perf_counter()
            try:
                return original(self, *a, **k)  # type: ignore[arg-type]
            finally:
                claims.append(time.perf_counter() - started)

        event_ids.EventIdIndex.claim = timed  # type: ignore[method-assign]
        imports: list[float] = []
        paths = [segment(folder, k, args.events) for k in range(args.segments)]
        for path in paths:
            started = time.perf_counter()
            ws.import_events(path, source=SOURCE_PREFIX + path.stem, spec=SPEC)
            imports.append(time.perf_counter() - started)
        event_ids.EventIdIndex.claim = original  # type: ignore[method-assign]
        # the baseline: the stop-17 probe, on the same store, with the last segment's ids
        store = ws.store
        store.execute(
            "CREATE TEMP TABLE batch AS SELECT CAST(event_id AS VARCHAR) AS event_id "
            "FROM read_json_auto(?)",
            [str(paths[-1])],
        )
        store.evict_cache(0)
        cache_before = store.buffer_bytes()
        scans = []
        for _ in range(5):
            started = time.perf_counter()
            store.rows(
                "SELECT DISTINCT event_id FROM events WHERE event_id IN (SELECT event_id FROM batch)"
            )
            scans.append(time.perf_counter() - started)
        scan_cache = store.buffer_bytes() - cache_before
        store.evict_cache(0)
        stored = int(store.scalar("SELECT count(*) FROM events"))
    # the one-time rebuild (a store from before the index, or a lost index file)
    index = folder / "proj" / ".microseg" / "microseg.duckdb.event-ids"
    index.unlink()
    with Workspace.open(folder / "proj") as ws:
        started = time.perf_counter()
        with ws.store.lock, ws.store.transaction():
            ws.store.event_ids.ensure(ws.store)
        rebuild = time.perf_counter() - started
        index_bytes = index.stat().st_size
    ms = sorted(1000 * c for c in claims)
    figures = {
        "events_stored": stored,
        "prefill_import_s": round(fill_seconds, 1),
        "segments": args.segments,
        "events_per_segment": args.events,
        "claim_ms_median": round(ms[len(ms) // 2], 2),
        "claim_ms_max": round(ms[-1], 2),
        "import_ms_median": round(sorted(1000 * s for s in imports)[len(imports) // 2], 1),
        "baseline_scan_ms_median": round(sorted(1000 * s for s in scans)[2], 1),
        "baseline_scan_cache_mib": round(scan_cache / MIB, 1),
        "ratio_baseline_over_claim": round(sorted(scans)[2] / (ms[len(ms) // 2] / 1000), 1),
        "index_rebuild_s": round(rebuild, 1),
        "index_file_mib": round(index_bytes / MIB, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
