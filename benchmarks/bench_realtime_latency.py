"""Where event -> visible-membership time goes: the importer's phases, timed per segment.

    python benchmarks/bench_realtime_latency.py [--rate 2000] [--seconds 20] [--batch 50]

In process (no HTTP): a project with one real-time segment (``page_view`` >= 1 in 1 h), the
API's Collector with a RealtimeBridge and a ServingState, as `microseg serve` wires them.
A feeder thread appends batches to the spool at ``--rate`` events/s (fsync on), exactly as
POST /v1/events/batch?wait=false does. Every importer cycle (one sealed spool segment) is
timed by phase:

* ``import``: ``Workspace.import_events`` on the segment (the DuckDB file pipeline:
  read, validate, quarantine, dedupe, sessions, identity keys, insert);
* ``record``: the commit ledger row plus reading the new events back for the state;
* ``serve``: ``ServingState.apply_batch`` (new ids/profiles) including the real-time
  evaluator and the persistence of membership changes.

With probes (a fresh user's ``page_view`` once per batch), latency is measured as the soak
benchmark does, but without HTTP in the way, from the moment ``Collector.submit`` is called
(the request reaching the collector): *visible* when the real-time bridge has served the
membership (``offer`` returned; right after the spool write, before the group fsync), *ack*
when ``submit`` returns (fsync'd: the point where the API answers), and, polled by a watcher
thread every 1 ms, *seen* when the serving state lists the segment. ``--commit-only``
measures the old path where events reach the evaluator only when their spool segment has
been imported (then only *seen* applies). ``--writers N`` submits from N threads (the API's
worker threads) so that group commit shows; ``--gil-switch-ms`` sets the collector's
switch interval (0: Python's 5 ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from microseg.api.collector import Collector
from microseg.api.realtime import RealtimeBridge
from microseg.api.serving import ServingState
from microseg.api.settings import ApiSettings
from microseg.workspace import Workspace

SEGMENT = "live_viewers"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--commit-only", action="store_true", help="no evaluation at acknowledgement")
    ap.add_argument("--writers", type=int, default=4, help="submitting threads")
    ap.add_argument("--gil-switch-ms", type=float, default=ApiSettings().gil_switch_ms)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="microseg-rt-")) / "proj"
    Workspace.init(root, "rt").close()
    for f in (root / "segments").glob("*.yaml"):
        f.unlink()
    (root / "segments" / f"{SEGMENT}.yaml").write_text(
        f"name: {SEGMENT}\nrule:\n  event: page_view\n  last: 1h\n  gte: 1\n"
    )
    ws = Workspace.open(root, actor="api")
    bridge = RealtimeBridge.from_workspace(ws)
    assert bridge is not None
    state = ServingState.from_store(ws.store, ws.keys)
    state.subscribe(bridge)
    collector = Collector(ws, ApiSettings(gil_switch_ms=args.gil_switch_ms), state)
    if not args.commit_only:
        collector.realtime = bridge
    phases: dict[str, list[float]] = defaultdict(list)
    sizes: list[int] = []

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name].append(time.perf_counter() - t)

        return wrapper

    ws.import_events = timed("import", ws.import_events)  # type: ignore[method-assign]
    collector._record_commit = timed("record", collector._record_commit)  # type: ignore[method-assign]
    state.apply_batch = timed("serve", state.apply_batch)  # type: ignore[method-assign]
    # the request side: spool write (page cache), evaluation, group fsync
    collector.spool.write = timed("req_write", collector.spool.write)  # type: ignore[method-assign]
    bridge.offer = timed("req_offer", bridge.offer)  # type: ignore[method-assign]
    collector.spool.sync = timed("req_sync", collector.spool.sync)  # type: ignore[method-assign]
    original_import = collector._import

    def count_import(segment: Any) -> None:
        sizes.append(segment.lines)
        original_import(segment)

    collector._import = count_import  # type: ignore[method-assign]
    collector.start()
    probes: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set() or len(seen) < len(probes):
            for user, t in list(probes.items()):
                if user in seen:
                    continue
                try:
                    if SEGMENT in state.get(user).segments:
                        seen[user] = time.monotonic() - t
                except Exception:
                    pass
            time.sleep(0.001)
            if stop.is_set() and time.monotonic() > stop_at + 120:
                break

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    visible_at: dict[str, float] = {}  # probe user -> when offer() returned for its batch
    if not args.commit_only:
        offer = bridge.offer

        def timed_offer(segment: str, items: Any, st: ServingState, now: Any = None) -> int:
            n = offer(segment, items, st, now)
            user = items[-1].get("user_id", "") if items else ""
            if user.startswith("p"):
                visible_at[user] = time.monotonic()
            return n

        bridge.offer = timed_offer  # type: ignore[method-assign,assignment]
    interval = args.batch / args.rate
    start = time.monotonic()
    counter = iter(range(10**9))
    guard = threading.Lock()
    sent_at: dict[str, float] = {}
    acked_at: dict[str, float] = {}

    def feed() -> None:
        while True:
            with guard:
                b = next(counter)
            due = start + b * interval
            if due >= start + args.seconds:
                return
            if due > time.monotonic():
                time.sleep(due - time.monotonic())
            ts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
            items: list[dict[str, Any]] = [
                {
                    "event_id": f"e{b}-{i}",
                    "event_type": "page_view" if i % 2 else "product_view",
                    "timestamp": ts,
                    "user_id": f"u{(b * args.batch + i) % 50_000}",
                    "price": 1.0,
                }
                for i in range(args.batch - 1)
            ]
            user = f"p{b}"
            items.append(
                {"event_id": f"e{b}-p", "event_type": "page_view", "timestamp": ts, "user_id": user}
            )
            lines, ids, indexes, _ = collector.encode(items)
            t = time.monotonic()
            sent_at[user] = probes[user] = t
            collector.submit(lines, ids, indexes, False, items)
            acked_at[user] = time.monotonic()

    feeders = [threading.Thread(target=feed) for _ in range(args.writers)]
    for feeder in feeders:
        feeder.start()
    for feeder in feeders:
        feeder.join()
    b = len(sent_at)
    stop_at = time.monotonic()
    stop.set()
    collector.stop()
    watcher.join(130)
    latencies = list(seen.values())  # the watcher timed them from the submit too
    visible = [visible_at[u] - sent_at[u] for u in visible_at]
    acks = [acked_at[u] - sent_at[u] for u in acked_at]
    figures = {
        "target_events_per_s": args.rate,
        "events": b * args.batch,
        "evaluated_at": "commit" if args.commit_only else "acknowledgement",
        "writers": args.writers,
        "gil_switch_ms": args.gil_switch_ms,
        "visible_after_submit_p50_ms (write + evaluation)": pct(visible, 50),
        "visible_after_submit_p99_ms": pct(visible, 99),
        "ack_after_submit_p50_ms (+ group fsync)": pct(acks, 50),
        "ack_after_submit_p99_ms": pct(acks, 99),
        "spool": collector.spool.stats(),
        "segments_imported": len(sizes),
        "events_per_segment_median": statistics.median(sizes) if sizes else 0,
        **{f"{name}_ms_p50": pct(values, 50) for name, values in sorted(phases.items())},
        **{f"{name}_ms_p99": pct(values, 99) for name, values in sorted(phases.items())},
        "importer_busy_fraction": sum(sum(v) for k, v in phases.items() if not k.startswith("req_"))
        / (stop_at - start),
        "req_max_ms": {k: pct(v, 100) for k, v in sorted(phases.items()) if k.startswith("req_")},
        "seen_by_watcher_after_submit_p50_ms": pct(latencies, 50),
        "seen_by_watcher_after_submit_p99_ms": pct(latencies, 99),
        "seen_by_watcher_after_submit_max_ms": pct(latencies, 100),
        "bridge": bridge.stats(),
        "probes_seen": len(latencies),
        "probes_sent": len(probes),
    }
    print(json.dumps(figures, indent=2))
    ws.close()


if __name__ == "__main__":
    main()
