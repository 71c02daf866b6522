"""Soak + real-time latency: 2,000 events/s for N minutes against a real server.

    python benchmarks/bench_soak.py [--minutes 10] [--rate 2000] [--batch 50] [--probes 5]

A temporary project gets one real-time segment, ``live_viewers`` (``page_view`` count >= 1
in the last ``--window``, default 2 minutes: the evaluator keeps every page_view of the window
in memory, so a 1 h window could not show a plateau in a 10-minute soak), and a real server (``python -m microseg.api``: uvicorn, real-time
evaluator on, spool fsync on). Then, in separate processes:

* the load generator posts ``--rate`` events/s in batches of ``--batch`` on a steady schedule
  (``?wait=false``: acknowledged once fsync'd to the spool), mixed event types over 50,000
  returning users, through pooled keep-alive sockets (:class:`RawHttp`, like a load tool:
  httpx spent 1-3 ms in the client before a request's bytes left, counted in every latency);
* ``--probes`` times a second a batch also carries a ``page_view`` of a probe user; from the
  moment the batch is SENT the reader polls ``GET /v1/decide/<user>`` (every 1 ms for the first
  100 ms, then every 10 ms) until ``live_viewers`` is among the served segments. By default
  every probe is a brand-new user (the population grows by ``--probes`` profiles a second);
  ``--probe-users N`` (or ``auto``) recycles a pool of N probe users instead, each reused only
  after it has left the segment (window + 90 s), so the population is bounded and memory can
  plateau. A reused user still in the segment when its probe is sent is skipped and counted.
  With ``--probe-mode own`` the reader itself sends each probe as a one-event request (and
  polls from that moment) instead of learning of it through a queue from the generator: the
  queue hand-off in a busy process (reported as ``probe_handoff``) is then not in the figure.

**Membership-visible latency** = time of the first decision response listing the segment
minus the time the batch was sent (the target's reading: event -> visible), also reported
minus the time its acknowledgement reached the client (negative when the membership was
visible before the acknowledgement). Probes of batches not acknowledged are dropped. It covers
HTTP -> spool -> real-time evaluation (at acknowledgement, or at the importer's commit) ->
serving/decision state. The main process samples the server's RSS every 5 s (``/proc``). At
the end the load stops, the spool drains, the server stops gracefully and the store is
compared with every acknowledged event: lost (acked, not stored) and duplicated events are
counted.

**Memory, what "flat" means.** RSS is reported at the start, after the warm-up (default: the
segment window + 60 s, by when the evaluator holds a full window of page_views and every
returning user has been seen; before that RSS rises by design), at the end, and as least-squares
slopes in MiB/min after the warm-up and over the last half of it. With ``--diag`` the server
(``soak_server.py``) also samples, every ``--diag-seconds``, the Python heap (pymalloc arenas,
allocated blocks; tracemalloc with ``--tracemalloc``), glibc malloc (in use / free), DuckDB's
buffer memory, anonymous / lazily-freed RSS and the sizes of the server's structures
(``microseg.bench.soak_diag``): the same plateau figures are printed for each, so growth can
be attributed (``python benchmarks/soak_report.py FILE`` prints the samples). Allocator
experiments: ``--memory-limit`` (DuckDB cap), ``--malloc-arena-max``, ``--duckdb-malloc-conf``
(DuckDB's jemalloc), ``--trim`` (malloc_trim after each sample).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
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
from microseg.bench import soak_diag
from microseg.segments.ast import parse_duration
from microseg.store import Store
from microseg.workspace import Workspace

SEGMENT = "live_viewers"
STALL_SECONDS = 60.0  # the load stops when no request has been acknowledged for this long
TYPES = ("page_view", "page_view", "product_view", "add_to_cart", "purchase")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def setup(root: Path, window: str, prefill: int = 0) -> dict[str, str]:
    """The soak's project: one real-time segment, API keys and, with ``prefill``, that many
    synthetic past events already stored (a store larger than DuckDB's cap from the start)."""
    Workspace.init(root, "soak").close()
    for f in (root / "segments").glob("*.yaml"):
        f.unlink()
    (root / "segments" / f"{SEGMENT}.yaml").write_text(
        f"name: {SEGMENT}\nrule:\n  event: page_view\n  last: {window}\n  gte: 1\n"
    )
    with Workspace.open(root) as ws:
        if prefill:
            from microseg.synth import generate_events

            past = root.parent / "prefill.parquet"
            generate_events(past, prefill, max(prefill // 10, 1), seed=7)
            ws.import_events(past)
            past.unlink()
            past.with_name(past.stem + ".truth.parquet").unlink(missing_ok=True)
        return {
            role: create_key(ws.store, ws.keys, role, rate_per_second=1e9)[1]
            for role in ("collector", "decision-reader", "admin")
        }


def start(
    root: Path, port: int, env: dict[str, str] | None = None, diag: bool = False
) -> subprocess.Popen[bytes]:
    """The real server; with ``diag`` through ``soak_server.py`` (same server + sampler).

    Its stderr goes to ``server.log`` beside the project (a pipe nobody reads would block the
    server once 64 KiB of log lines accumulate)."""
    entry = [str(Path(__file__).with_name("soak_server.py"))] if diag else ["-m", "microseg.api"]
    log_path = root.parent / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, *entry, "--project", str(root), "--port", str(port)],
            stderr=log_file,
            env={**os.environ, **(env or {})},
        )
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def probe_user(b: int, probe_every: int, probe_users: int) -> str:
    """The user of batch ``b``'s probe: brand-new, or cycled through a pool of ``probe_users``."""
    return f"p{b}" if probe_users <= 0 else f"p{(b // probe_every) % probe_users}"


def batch_events(b: int, size: int, probe: str | None) -> list[dict[str, Any]]:
    ts = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    events = [
        {
            "event_id": f"s{b}-{i}",
            "event_type": TYPES[(b + i) % len(TYPES)],
            "timestamp": ts,
            "user_id": f"u{(b * size + i) % 50_000}",
            "price": 10.0,
            "quantity": 1,
            "url": "/x",
        }
        for i in range(size - 1 if probe else size)
    ]
    if probe:
        events.append(
            {"event_id": f"s{b}-p", "event_type": "page_view", "timestamp": ts, "user_id": probe}
        )
    return events


# ------------------------------------------------------------------------- load generator
def generator(
    port: int,
    key: str,
    rate: float,
    size: int,
    probes: float,
    probe_users: int,
    seconds: float,
    q: Any,
    out: Any,
) -> None:
    interval = size / rate
    probe_every = max(1, round(rate / size / probes)) if probes > 0 else 0
    acked: list[int] = []
    last_ack = [time.monotonic()]  # watchdog: a server that stops acknowledging ends the run
    stalled: list[float] = []
    status: dict[int, int] = {}
    errors = 0
    lag: list[float] = []

    async def send(client: RawHttp, b: int) -> None:
        nonlocal errors
        probe = (
            probe_user(b, probe_every, probe_users)
            if probe_every and b % probe_every == 0
            else None
        )
        body = orjson.dumps({"events": batch_events(b, size, probe)})
        sent = time.monotonic()
        if probe:  # the reader starts polling now: the latency is measured from the send
            q.put(("send", b, probe, sent))
        try:
            code, _ = await client.request("POST", "/v1/events/batch?wait=false", body)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            errors += 1
            if probe:
                q.put(("fail", b))
            return
        status[code] = status.get(code, 0) + 1
        if code in (200, 202):
            acked.append(b)
            last_ack[0] = time.monotonic()
            if probe:
                q.put(("ack", b, time.monotonic()))
        elif probe:
            q.put(("fail", b))

    async def main() -> None:
        client = RawHttp(port, key)
        start_t = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        b = 0
        last_ack[0] = start_t
        while (now := time.monotonic()) < start_t + seconds:
            if now - last_ack[0] > STALL_SECONDS:
                stalled.append(now - start_t)  # no acknowledgement for a minute
                break
            due = start_t + b * interval
            if due > now:
                await asyncio.sleep(due - now)
            lag.append(max(0.0, time.monotonic() - due))
            task = asyncio.create_task(send(client, b))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            b += 1
        await asyncio.gather(*tasks)

    asyncio.run(main())
    q.put(None)
    lag.sort()
    out.put(
        {
            "batches": len(status) and sum(status.values()),
            "acked": acked,
            "status": status,
            "transport_errors": errors,
            "schedule_lag_p99_ms": 1000 * lag[int(0.99 * (len(lag) - 1))] if lag else 0.0,
            "stalled_at_s": stalled[0] if stalled else None,
        }
    )


# -------------------------------------------------------------------------------- reader
KEEPALIVE_SECONDS = 4.0  # reuse a pooled socket only this long (uvicorn's keep-alive: 5 s)


class RawHttp:
    """HTTP/1.1 requests over pooled keep-alive sockets, parsed by hand. Polling every
    millisecond through httpx cost the reader most of a core on this 2-core machine, CPU taken
    from the server it measures (and its own polls ran late); the generator's posts through
    httpx spent ~1-3 ms in the client before their bytes left, counted in every latency."""

    def __init__(self, port: int, key: str, connections: int = 64, timeout: float = 60) -> None:
        self.port = port
        self.key = key
        self.timeout = timeout
        # (reader, writer, when it went idle); LIFO, so a burst's extra sockets sink and age
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(connections)

    async def request(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        """Status code and body of one request (raises OSError / ValueError when the
        connection fails or the response is not understood, TimeoutError after ``timeout``)."""
        async with self._slots, asyncio.timeout(self.timeout):
            return await self._request(method, target, body)

    async def _request(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._connection()
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {self.key}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            writer.write(head.encode() + b"\r\n" + body)
            lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
            status = int(lines[0].split()[1])
            lengths = [
                int(line.split(b":", 1)[1])
                for line in lines[1:]
                if line.lower().startswith(b"content-length:")
            ]
            if not lengths:
                raise ValueError("response without Content-Length")
            payload = await reader.readexactly(lengths[0])
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer, time.monotonic()))
        return status, payload

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A pooled socket the server has not timed out, else a new one.

        uvicorn closes a keep-alive socket idle for 5 s; a request written to it fails with
        no response (a transport error that is the client's doing), so older ones are dropped.
        """
        while self._idle:
            reader, writer, idle_since = self._idle.pop()
            if time.monotonic() - idle_since < KEEPALIVE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def segments(self, user: str) -> tuple[int, list[str]]:
        """``GET /v1/decide/<user>``: status code and served segments (empty unless 200)."""
        status, body = await self.request("GET", f"/v1/decide/{user}")
        return status, (orjson.loads(body)["segments"] if status == 200 else [])


def reader(
    port: int,
    key: str,
    q: Any,
    out: Any,
    stale_after: float,
    own: tuple[str, float, int, float] | None = None,
    timeout: float = 300.0,
    ready: Any = None,
) -> None:
    """Poll the decision API for every probe from its send time; see the module docstring.

    ``own`` = (collector key, probes/s, probe users, seconds): this process sends each probe
    itself, a one-event request, and polls from that moment (``--probe-mode own``)."""
    sent_at: dict[int, float] = {}
    acked_at: dict[int, float] = {}
    handoff: list[float] = []  # from the generator's send until this process starts polling
    own_acked: list[str] = []
    failed: set[int] = set()
    seen_at: dict[int, float] = {}
    last_seen: dict[str, float] = {}  # probe user -> when its membership was last observed
    timed_out: set[int] = set()
    stale = 0
    fivexx = 0
    transport = [0]

    poller = RawHttp(port, key)

    async def probe(b: int, user: str, sent: float) -> None:
        nonlocal fivexx
        while time.monotonic() - sent < timeout and b not in failed:
            try:
                status, segments = await poller.segments(user)
            except (OSError, asyncio.IncompleteReadError, ValueError):  # connection closed
                transport[0] += 1
                continue
            if status >= 500:
                fivexx += 1
            if status == 200 and SEGMENT in segments:
                seen_at[b] = last_seen[user] = time.monotonic()
                return
            # 1 ms resolution for the first 100 ms, then 10 ms (fewer polls when far behind)
            await asyncio.sleep(0.001 if time.monotonic() - sent < 0.1 else 0.01)
        if b not in failed:
            timed_out.add(b)

    async def send_own(client: RawHttp, k: int, user: str, sent: float) -> None:
        event_id = f"r{k}"
        event = {"event_id": event_id, "event_type": "page_view", "user_id": user}
        event["timestamp"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        body = orjson.dumps({"events": [event]})
        try:
            code, _ = await client.request("POST", "/v1/events/batch?wait=false", body)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError):
            failed.add(k)
            return
        if code in (200, 202):
            acked_at[k] = time.monotonic()
            own_acked.append(event_id)
        else:
            failed.add(k)

    async def own_probes() -> None:
        nonlocal stale
        assert own is not None
        collector_key, rate, users, seconds = own
        client = RawHttp(port, collector_key)
        start_t, tasks, k = time.monotonic(), [], 0
        while time.monotonic() < start_t + seconds:
            due = start_t + k / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            user = probe_user(k, 1, users)  # every request is a probe
            sent = time.monotonic()
            if sent - last_seen.get(user, -1e18) < stale_after:
                stale += 1
            else:
                sent_at[k] = sent
                handoff.append(0.0)
                tasks.append(asyncio.create_task(send_own(client, k, user, sent)))
                tasks.append(asyncio.create_task(probe(k, user, sent)))
            k += 1
        await asyncio.gather(*tasks)

    async def main() -> None:
        nonlocal stale
        loop = asyncio.get_running_loop()
        # one poll opens a connection; then the load may start (the first probes of a
        # reader still importing its modules would be timed from their send)
        await poller.segments("user_id:soak-reader-warmup")
        if ready is not None:
            ready.set()
        if own is not None:
            await own_probes()
            while await loop.run_in_executor(None, q.get) is not None:
                pass  # the generator sends no probes in this mode
            return
        tasks = []
        while True:
            item = await loop.run_in_executor(None, q.get)
            if item is None:
                break
            if item[0] == "send":
                _, b, user, sent = item
                if sent - last_seen.get(user, -1e18) < stale_after:
                    stale += 1  # a recycled user that may still be a member: not a probe
                    continue
                sent_at[b] = sent
                handoff.append(time.monotonic() - sent)
                tasks.append(asyncio.create_task(probe(b, user, sent)))
            elif item[0] == "ack":
                acked_at[item[1]] = item[2]
            else:
                failed.add(item[1])
        await asyncio.gather(*tasks)

    asyncio.run(main())
    probes = [b for b in sent_at if b in acked_at]
    out.put(
        {
            # (send time, visible after send) of every probe seen: the figures and, to see
            # whether slow ones cluster, when they were sent
            "series": [(sent_at[b], seen_at[b] - sent_at[b]) for b in probes if b in seen_at],
            "from_ack": [seen_at[b] - acked_at[b] for b in probes if b in seen_at],
            "ack": [acked_at[b] - sent_at[b] for b in probes],
            "timeouts": sum(1 for b in probes if b in timed_out),
            "stale_skipped": stale,
            "5xx": fivexx,
            "transport_errors": transport[0],
            "handoff": handoff,
            "own_acked": own_acked,
        }
    )


def slow_probes(series: list[tuple[float, float]], over: float = 0.020) -> list[list[float]]:
    """[seconds since the first probe, ms] of the probes slower than ``over`` seconds."""
    if not series:
        return []
    first = min(t for t, _ in series)
    return [[round(t - first, 2), round(1000 * v, 1)] for t, v in sorted(series) if v > over]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="events per second")
    ap.add_argument("--batch", type=int, default=50, help="events per request")
    ap.add_argument("--probes", type=float, default=5.0, help="latency probes per second")
    ap.add_argument(
        "--probe-users",
        default="0",
        help="0: every probe is a brand-new user (the population grows); N or 'auto' (enough"
        " for each user to leave the segment before its reuse): a bounded pool of probe users",
    )
    ap.add_argument(
        "--window",
        default="2m",
        help="the segment's window; the real-time evaluator keeps each profile's page_views"
        " for this long, so memory can only plateau once a window has passed",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds excluded from the slope (default: the window + 60 s: the evaluator's"
        " window fills and every returning user has been seen)",
    )
    ap.add_argument(
        "--probe-mode",
        choices=("batch", "own"),
        default="batch",
        help="batch: a probe event rides in a generator batch and the reader learns of it"
        " through a queue (its hand-off delay is in the latency, reported as probe_handoff);"
        " own: the reader sends each probe as a one-event request and polls from that moment",
    )
    ap.add_argument("--memory-limit", help="DuckDB cap of the server (e.g. 256MB)")
    ap.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="store this many synthetic past events before the server starts (with"
        " --memory-limit: a database larger than the cap from the first minute)",
    )
    ap.add_argument(
        "--cache-budget",
        help="the server's store_cache_budget (default: the setting's, 32MiB); 'off' keeps"
        " DuckDB's cache up to the cap",
    )
    ap.add_argument("--malloc-arena-max", type=int, help="MALLOC_ARENA_MAX for the server")
    ap.add_argument(
        "--duckdb-malloc-conf",
        help="DUCKDB_JE_MALLOC_CONF for the server (DuckDB's own jemalloc on Linux), e.g."
        " dirty_decay_ms:0,muzzy_decay_ms:0 to return freed pages at once",
    )
    ap.add_argument(
        "--diag",
        action="store_true",
        help="sample the server's memory breakdown (microseg.bench.soak_diag) every"
        " --diag-seconds into --diag-out",
    )
    ap.add_argument("--diag-seconds", type=float, default=30.0)
    ap.add_argument("--diag-out", type=Path, help="JSON lines (default: beside --json or /tmp)")
    ap.add_argument("--tracemalloc", action="store_true", help="with --diag: trace the Python heap")
    ap.add_argument("--trim", action="store_true", help="with --diag: malloc_trim(0) per sample")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    window_s = parse_duration(args.window).total_seconds()
    if args.warmup is None:
        args.warmup = window_s + 60
    args.probe_users = (
        math.ceil(args.probes * (window_s + 90)) + 1
        if args.probe_users == "auto"
        else int(args.probe_users)
    )
    args.stale_after = window_s + 30
    if args.diag and args.diag_out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.diag_out = (
            args.json.with_suffix(".diag.jsonl")
            if args.json
            else Path(tempfile.gettempdir()) / f"microseg-soak-diag-{stamp}.jsonl"
        )
    env = server_env(args)
    tmp = Path(tempfile.mkdtemp(prefix="microseg-soak-"))
    root = tmp / "proj"
    keys = setup(root, args.window, args.prefill)
    port = free_port()
    server = start(root, port, env, diag=args.diag)
    try:
        run(args, root, keys, port, server)
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment of the server process for the chosen options."""
    env: dict[str, str] = {}
    if args.memory_limit:
        env["MICROSEG_API_STORE_MEMORY_LIMIT"] = args.memory_limit
    if args.cache_budget == "off":
        env["MICROSEG_API_STORE_CACHE_SECONDS"] = "0"
    elif args.cache_budget:
        env["MICROSEG_API_STORE_CACHE_BUDGET"] = args.cache_budget
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    if args.duckdb_malloc_conf:
        env["DUCKDB_JE_MALLOC_CONF"] = args.duckdb_malloc_conf
    if args.diag:
        args.diag_out.unlink(missing_ok=True)
        env |= {
            soak_diag.ENV_ON: "1",
            soak_diag.ENV_FILE: str(args.diag_out),
            soak_diag.ENV_SECONDS: str(args.diag_seconds),
            soak_diag.ENV_TRACEMALLOC: "1" if args.tracemalloc else "0",
            soak_diag.ENV_TRIM: "1" if args.trim else "0",
        }
    return env


def run(
    args: argparse.Namespace,
    root: Path,
    keys: dict[str, str],
    port: int,
    server: subprocess.Popen[bytes],
) -> None:
    ctx = mp.get_context("spawn")
    q, gen_out, read_out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    seconds = args.minutes * 60
    gen = ctx.Process(
        target=generator,
        args=(
            port,
            keys["collector"],
            args.rate,
            args.batch,
            args.probes if args.probe_mode == "batch" else 0.0,
            args.probe_users,
            seconds,
            q,
            gen_out,
        ),
    )
    own = (
        (keys["collector"], args.probes, args.probe_users, seconds)
        if args.probe_mode == "own"
        else None
    )
    ready = ctx.Event()
    rd = ctx.Process(
        target=reader,
        args=(port, keys["decision-reader"], q, read_out, args.stale_after, own),
        kwargs={"ready": ready},
    )
    rd.start()
    if not ready.wait(120):  # the generator starts once the reader polls
        rd.kill()
        raise SystemExit("the latency reader did not start within 120 s")
    rss: list[tuple[float, float]] = []
    t0 = time.monotonic()
    rss.append((0.0, rss_mb(server.pid)))
    gen.start()
    g: dict[str, Any] | None = None
    while g is None:  # read the result before joining: a child with queued data cannot exit
        try:
            g = gen_out.get(timeout=5)
        except queue.Empty:
            if not gen.is_alive():  # killed from outside: no figures would ever come
                rd.kill()
                raise SystemExit(f"load generator died (exit code {gen.exitcode})") from None
            rss.append((time.monotonic() - t0, rss_mb(server.pid)))
            if len(rss) % 12 == 0:
                print(f"  t={rss[-1][0]:.0f}s rss={rss[-1][1]:.0f} MiB", flush=True)
    load_seconds = time.monotonic() - t0
    r = read_out.get()
    from_send = [v for _, v in r["series"]]  # visible after send, per probe seen
    gen.join()
    rd.join()
    # drain: wait until the importer has committed everything, then stop gracefully
    admin = {"X-API-Key": keys["admin"]}
    drain_t = time.monotonic()
    while True:
        stats = httpx.get(
            f"http://127.0.0.1:{port}/v1/admin/stats", headers=admin, timeout=120
        ).json()
        drain_limit = 30 if g["stalled_at_s"] is not None else 600
        if stats["collector"]["backlog_events"] == 0 or time.monotonic() - drain_t > drain_limit:
            break
        time.sleep(0.5)
    drain_seconds = time.monotonic() - drain_t
    rss.append((time.monotonic() - t0, rss_mb(server.pid)))
    server.send_signal(signal.SIGTERM)
    server.wait(120)
    store = Store(root / ".microseg" / "microseg.duckdb")
    stored = dict(store.rows("SELECT event_id, count(*) FROM events GROUP BY 1"))
    store.close()
    expected = {
        e["event_id"]
        for b in g["acked"]
        for e in batch_events(b, args.batch, None)  # ids only; probe id added below
    }
    probe_every = (
        max(1, round(args.rate / args.batch / args.probes))
        if args.probes > 0 and args.probe_mode == "batch"
        else 0
    )
    expected.update(r["own_acked"])
    for b in g["acked"]:
        if probe_every and b % probe_every == 0:
            expected.discard(f"s{b}-{args.batch - 1}")
            expected.add(f"s{b}-p")
    lost = len(expected - set(stored))
    duplicates = sum(n - 1 for n in stored.values() if n > 1)
    acked_events = len(expected)
    # memory: RSS samples every 5 s; "flat" = slopes after the warm-up (see soak_diag.plateau)
    rss_plateau = soak_diag.plateau(rss, args.warmup)
    diag = (
        soak_diag.summarize(soak_diag.read_samples(args.diag_out), args.warmup) if args.diag else {}
    )
    figures = {
        "minutes": args.minutes,
        "segment_window": args.window,
        "target_events_per_s": args.rate,
        "acked_events": acked_events,
        "acked_events_per_s": acked_events / seconds,
        "load_seconds": load_seconds,
        "http_status": g["status"],
        "5xx": sum(n for s, n in g["status"].items() if int(s) >= 500) + r["5xx"],
        "transport_errors": g["transport_errors"],
        "reader_transport_errors": r["transport_errors"],
        "schedule_lag_p99_ms": g["schedule_lag_p99_ms"],
        "stalled_at_s": g["stalled_at_s"],  # set when the server stopped acknowledging
        "lost": lost,
        "duplicates": duplicates,
        "drain_seconds": drain_seconds,
        "probe_users": args.probe_users or "brand-new",
        "latency_probes": len(from_send),
        "latency_timeouts": r["timeouts"],
        "latency_stale_skipped": r["stale_skipped"],
        "visible_before_ack_share": (
            sum(1 for v in r["from_ack"] if v < 0) / len(r["from_ack"]) if r["from_ack"] else 0.0
        ),
        "probe_ack_p50_ms": pct(r["ack"], 50),
        "probe_ack_p99_ms": pct(r["ack"], 99),
        "visible_after_ack_p50_ms": pct(r["from_ack"], 50),
        "visible_after_ack_p99_ms": pct(r["from_ack"], 99),
        "visible_after_send_p50_ms": pct(from_send, 50),
        "visible_after_send_p99_ms": pct(from_send, 99),
        "visible_after_send_p90_ms": pct(from_send, 90),
        "visible_after_send_max_ms": pct(from_send, 100),
        "visible_after_send_over_20ms": sum(1 for v in from_send if v > 0.020),
        "probe_series_s_ms": slow_probes(r["series"]),
        "probe_mode": args.probe_mode,
        "probe_handoff_p50_ms": pct(r["handoff"], 50),
        "probe_handoff_p99_ms": pct(r["handoff"], 99),
        "warmup_seconds": args.warmup,
        "duckdb_memory_limit": args.memory_limit,
        "store_cache_budget": args.cache_budget or "default",
        "prefilled_events": args.prefill,
        "malloc_arena_max": args.malloc_arena_max,
        "duckdb_malloc_conf": args.duckdb_malloc_conf,
        "diag_trim": args.diag and args.trim,
        "rss_start_mib": round(rss[0][1], 1),
        "rss_after_warmup_mib": rss_plateau["after_warmup"],
        "rss_end_mib": round(rss[-1][1], 1),
        "rss_max_mib": round(max(m for _, m in rss), 1),
        "rss_slope_mib_per_min_after_warmup": rss_plateau["slope"],
        "rss_slope_mib_per_min_last_half": rss_plateau["last_half_slope"],
        "rss_slope_mib_per_min_last_10min": rss_plateau["last_10min_slope"],
        # the server's own counters at the end: spool rounds, GC pauses, the bridge's work
        "server_collector": stats.get("collector"),
        "server_realtime": stats.get("realtime"),
        "diagnostics": diag,
        "diagnostics_file": str(args.diag_out) if args.diag else None,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps({**figures, "rss_samples": rss}, indent=2))
    if g["stalled_at_s"] is not None:  # keep the server's log: the project folder is removed
        kept = Path(tempfile.gettempdir()) / f"microseg-soak-server-{time.strftime('%H%M%S')}.log"
        shutil.copyfile(root.parent / "server.log", kept)
        raise SystemExit(
            f"the server stopped acknowledging at t={g['stalled_at_s']:.0f}s"
            f" (no ack for {STALL_SECONDS:.0f}s); its log: {kept}"
        )


if __name__ == "__main__":
    main()
