"""Crash test on a real server process: kill -9 mid-stream loses no acknowledged event.

uvicorn runs in a subprocess on a free 127.0.0.1 port. Four client threads stream 20,000
events in batches of 500 (half answered after the store commit, half after the spool fsync).
The server is killed with SIGKILL once some batches are acknowledged; after a restart the
acknowledged events must all be in the store exactly once. The client then retries the
batches that were never acknowledged, and every event is stored exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from api_support import iso

from microseg.api.keys import create_key
from microseg.store import Store
from microseg.workspace import Workspace

BATCHES, PER_BATCH = 40, 500


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(project: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MICROSEG_API_DEV": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microseg.api",
            "--project",
            str(project),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # graceful: drains the spool, closes the store
    # uvicorn re-raises the signal after its graceful shutdown
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)


def _batch(b: int) -> list[dict[str, Any]]:
    ts = iso()
    return [
        {
            "event_id": f"b{b}-{i}",
            "event_type": "page_view",
            "timestamp": ts,
            "user_id": f"u{(b * PER_BATCH + i) % 3000}",
            "url": f"/p/{i % 50}",
        }
        for i in range(PER_BATCH)
    ]


def _stored(project: Path) -> dict[str, int]:
    store = Store(project / ".microseg" / "microseg.duckdb")
    try:
        return dict(store.rows("SELECT event_id, count(*) FROM events GROUP BY event_id"))
    finally:
        store.close()


def test_kill_9_mid_stream_loses_no_acknowledged_event(project: Path) -> None:
    with Workspace.open(project) as ws:
        _, key = create_key(ws.store, ws.keys, "collector", name="crash test")
    headers = {"X-API-Key": key}
    port = _free_port()
    proc = _start(project, port)
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def send(b: int) -> None:
        if stop.is_set():
            return
        wait = "true" if b % 2 else "false"
        try:
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/events/batch?wait={wait}",
                json={"events": _batch(b)},
                headers=headers,
                timeout=30,
            )
        except httpx.TransportError:
            return  # no answer: not acknowledged, the client will retry
        assert r.status_code in (200, 202), r.text
        with lock:
            acked.add(b)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send, b) for b in range(BATCHES)]
        deadline = time.monotonic() + 60
        while len(acked) < 12 and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        stop.set()
        proc.wait(timeout=10)
        for f in futures:
            f.result()
    killed_with = set(acked)
    assert 12 <= len(killed_with) < BATCHES, "the kill must land mid-stream"

    # Restart: the spool is recovered at startup; then stop and look at the store itself.
    _stop(_start(project, port))
    stored = _stored(project)
    assert all(n == 1 for n in stored.values()), "an event was stored twice"
    for b in killed_with:
        missing = [e["event_id"] for e in _batch(b) if e["event_id"] not in stored]
        assert not missing, f"acknowledged batch {b} lost {len(missing)} events"

    # The client retries what was never acknowledged (and one acknowledged batch again).
    proc = _start(project, port)
    retry = [*sorted(set(range(BATCHES)) - killed_with), min(killed_with)]

    def resend(b: int) -> dict[str, int]:
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/events/batch",
            json={"events": _batch(b)},
            headers=headers,
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(resend, retry))
    _stop(proc)
    totals = {k: sum(a[k] for a in answers) for k in ("accepted", "duplicates", "quarantined")}
    stored = _stored(project)
    assert len(stored) == BATCHES * PER_BATCH
    assert set(stored.values()) == {1}
    assert totals["quarantined"] == 0
    assert totals["accepted"] + totals["duplicates"] == len(retry) * PER_BATCH
    assert totals["duplicates"] >= PER_BATCH  # at least the re-sent acknowledged batch
    assert not list((project / ".microseg" / "spool").glob("seg-*"))
