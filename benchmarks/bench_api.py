"""Benchmark the HTTP API on loopback: decision req/s + latency, durable collection events/s.

    python benchmarks/bench_api.py [--profiles 20000] [--seconds 10] [--events 200000]

Starts a real server (`python -m microseg.api`, uvicorn with uvloop/httptools when installed)
on a free 127.0.0.1 port over a temporary project, then:

1. decision endpoint: GET /v1/decide/{ref} over random known profiles, measured with `wrk`
   when installed (else a keep-alive asyncio load generator in a separate process);
2. collection: POST /v1/events/batch of 1,000 events from concurrent clients, both
   ``wait=true`` (acknowledged after the DuckDB commit) and ``wait=false`` (acknowledged
   after the spool fsync; the time until everything is committed is reported too).

Figures depend on the machine; on 2 shared cores server and load generator compete.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from microseg.api.keys import create_key
from microseg.bench.load import decide_load
from microseg.workspace import Workspace


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(minutes_ago: float = 5) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def make_events(prefix: str, n: int, users: int) -> list[dict[str, Any]]:
    ts = iso()
    return [
        {
            "event_id": f"{prefix}-{i}",
            "event_type": "page_view",
            "timestamp": ts,
            "user_id": f"u{i % users}",
            "url": f"/p/{i % 100}",
            "time_spent": i % 60,
        }
        for i in range(n)
    ]


def seed(root: Path, profiles: int, realtime: bool = False) -> tuple[dict[str, str], list[str]]:
    Workspace.init(root, "bench").close()
    if realtime:  # one segment the server evaluates in real time (the templates need traits)
        for f in (root / "segments").glob("*.yaml"):
            f.unlink()
        (root / "segments" / "viewers.yaml").write_text(
            "name: viewers\nrule:\n  event: page_view\n  last: 1h\n  gte: 1\n"
        )
    with Workspace.open(root) as ws:
        path = root / "seed.jsonl"
        path.write_bytes(
            b"".join(orjson.dumps(e) + b"\n" for e in make_events("seed", profiles, profiles))
        )
        ws.import_events(path)
        path.unlink()
        ws.store.execute(
            "CREATE TABLE traits AS SELECT profile_id, random() * 1000 AS ltv,"
            " 'tier_' || (hash(profile_id) % 4) AS tier FROM profiles"
        )
        ws.store.execute(
            "CREATE TABLE IF NOT EXISTS memberships (segment VARCHAR, profile_id VARCHAR,"
            " entered_at TIMESTAMP)"
        )
        ws.store.execute(
            "INSERT INTO memberships SELECT 'seg_' || (hash(profile_id) % 7), profile_id,"
            " now() FROM profiles"
        )
        keys = {
            role: create_key(ws.store, ws.keys, role, rate_per_second=1e9)[1]
            for role in ("decision-reader", "collector", "admin")
        }
    return keys, [f"user_id:u{i}" for i in range(profiles)]


def start(root: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microseg.api",
            "--project",
            str(root),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
    )
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


# ------------------------------------------------------------------------------ collection
async def collect(
    port: int, key: str, total: int, batch: int, clients: int, wait: bool, tag: str
) -> dict[str, Any]:
    bodies = [
        orjson.dumps({"events": make_events(f"{tag}{b}", batch, 50_000)})
        for b in range(total // batch)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    counts = {"accepted": 0, "duplicates": 0, "quarantined": 0}
    url = f"http://127.0.0.1:{port}/v1/events/batch?wait={'true' if wait else 'false'}"
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    async def client() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not queue.empty():
                body = queue.get_nowait()
                t0 = time.perf_counter()
                r = await http.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                assert r.status_code in (200, 202), r.text
                for k in counts:
                    counts[k] += r.json()[k] or 0

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    acked = time.perf_counter() - t0
    res: dict[str, Any] = {
        "mode": "wait=true (DuckDB commit)" if wait else "wait=false (spool fsync)",
        "events": total,
        "batch": batch,
        "clients": clients,
        "ack_seconds": acked,
        "events_per_s_acked": total / acked,
        "p50_batch_ms": statistics.median(latencies) * 1e3,
        **counts,
    }
    if not wait:
        async with httpx.AsyncClient(timeout=30) as http:
            while True:
                stats = (
                    await http.get(
                        f"http://127.0.0.1:{port}/v1/admin/stats", headers={"X-API-Key": ADMIN[0]}
                    )
                ).json()
                if stats["collector"]["backlog_events"] == 0:
                    break
                await asyncio.sleep(0.05)
        done = time.perf_counter() - t0
        res["committed_seconds"] = done
        res["events_per_s_committed"] = total / done
    return res


ADMIN: list[str] = []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", type=int, default=20_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="8,32", help="comma-separated; one decide run each")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--no-wrk", action="store_true", help="use the asyncio load generator")
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="a real-time segment: collected events are also evaluated at acknowledgement",
    )
    ap.add_argument("--collect-only", action="store_true", help="skip the decide runs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="microseg-bench-api-"))
    root = tmp / "proj"
    keys, refs = seed(root, args.profiles, args.realtime)
    ADMIN.append(keys["admin"])
    port = free_port()
    proc = start(root, port)
    try:
        # warm up
        for ref in refs[:200]:
            httpx.get(
                f"http://127.0.0.1:{port}/v1/decide/{ref}",
                headers={"X-API-Key": keys["decision-reader"]},
            )
        runs = [] if args.collect_only else [int(c) for c in args.connections.split(",")]
        for connections in runs:
            dec = decide_load(
                port,
                keys["decision-reader"],
                refs,
                args.seconds,
                connections,
                tool="asyncio" if args.no_wrk else "auto",
            )
            print(
                f"decide: {dec['rps']:,.0f} req/s  p50 {dec['p50_ms']:.2f} ms"
                f"  p99 {dec['p99_ms']:.2f} ms  non-2xx {dec['non2xx']}"
                f"  errors {dec['errors']}  ({dec['tool']})"
            )
        for wait in (False, True):
            res = asyncio.run(
                collect(
                    port,
                    keys["collector"],
                    args.events,
                    args.batch,
                    args.clients,
                    wait,
                    "w" if wait else "a",
                )
            )
            line = (
                f"collect {res['mode']}: {res['events_per_s_acked']:,.0f} events/s acknowledged"
                f" ({res['events']:,} events, batch {res['batch']}, {res['clients']} clients,"
                f" p50 batch {res['p50_batch_ms']:.0f} ms)"
            )
            if "events_per_s_committed" in res:
                line += f"; {res['events_per_s_committed']:,.0f} events/s committed to DuckDB"
            else:
                line += f"; accepted {res['accepted']:,} duplicates {res['duplicates']:,}"
            print(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPUs; server and load generator share them")
    print("real-time segment evaluated at acknowledgement" if args.realtime else "no real-time")


if __name__ == "__main__":
    main()
