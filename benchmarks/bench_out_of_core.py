"""Out-of-core run: 100 M synthetic events, DuckDB capped at 4 GB, traits and 20 segments.

    python benchmarks/bench_out_of_core.py --events 100000000 --memory-limit 4GB

Events come from ``microseg.synth`` (cached Parquet, 10 events per profile). They are loaded
with one set-based SQL statement (sessions by the 30-minute gap rule, one identity per user)
rather than the validating import, which is measured by ``microseg bench``; then the project's
default traits and the benchmark's 20 segments run in child processes under the memory cap,
each reporting wall time and its own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import yaml

from microseg.bench.runner import SYNTH_DAYS, SYNTH_START, ensure_events, run_child
from microseg.bench.segments import definitions
from microseg.bench.steps import peak_rss_mb
from microseg.workspace import Workspace

LOAD_EVENTS = """
INSERT INTO events BY NAME
SELECT event_id, event_type::VARCHAR AS event_type, ts, now()::TIMESTAMP AS received_at,
       user_id, id_key,
       'ms-' || md5(id_key || ':' || (sum(brk) OVER (PARTITION BY id_key ORDER BY ts))::VARCHAR)
           AS session_id,
       'bulk' AS source, device::VARCHAR AS device, product_id, category::VARCHAR AS category,
       price, quantity::DOUBLE AS quantity, cart_value, url, campaign_id
FROM (
  SELECT *, "timestamp" AS ts, 'user_id:' || user_id AS id_key,
         CASE WHEN lag("timestamp") OVER w IS NULL
                OR "timestamp" - lag("timestamp") OVER w > INTERVAL 30 MINUTE
              THEN 1 ELSE 0 END AS brk
  FROM read_parquet(?)
  WINDOW w AS (PARTITION BY user_id ORDER BY "timestamp")
)
"""
LOAD_IDENTITIES = """
INSERT INTO identities
SELECT id_key, 'user_id', any_value(user_id), 'p_' || substr(md5(id_key), 1, 20),
       min(ts), max(ts), 'bulk', NULL
FROM events GROUP BY id_key
"""


def load(project: Path, events: Path, memory_limit: str) -> dict[str, float]:
    ws = Workspace.init(project, "out-of-core", memory_limit=memory_limit)
    try:
        for old in (project / "segments").glob("*.yaml"):
            old.unlink()
        for d in definitions():
            (project / "segments" / f"{d['name']}.yaml").write_text(yaml.safe_dump(d))
        store = ws.store
        store.ensure_columns("events", ws.settings.taxonomy.property_columns())
        store.execute("SET preserve_insertion_order = false")
        began = time.perf_counter()
        store.execute(LOAD_EVENTS, [str(events)])
        store.execute(LOAD_IDENTITIES)
        store.execute(
            "INSERT INTO profiles SELECT profile_id, first_seen, last_seen, NULL FROM identities"
        )
        return {
            "load_seconds": time.perf_counter() - began,
            "events": float(store.scalar("SELECT count(*) FROM events")),
            "profiles": float(store.scalar("SELECT count(*) FROM profiles")),
            "load_peak_rss_mb": peak_rss_mb(),
        }
    finally:
        ws.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--memory-limit", default="4GB")
    ap.add_argument("--workdir", type=Path, default=Path(".microseg-bench"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    events = ensure_events(args.workdir, args.events, args.events // 10, 1)
    project = args.workdir / f"out_of_core_{args.events}"
    result: dict[str, object] = {"events_requested": args.events, "memory_limit": args.memory_limit}
    result.update(load(project, events, args.memory_limit))
    base = {
        "project": str(project),
        "as_of": (SYNTH_START + timedelta(days=SYNTH_DAYS)).isoformat(),
        "memory_limit": args.memory_limit,
    }
    for step in ("traits", "segments"):
        result[step] = run_child(step, base)
        print(step, json.dumps(result[step], default=str), flush=True)
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
