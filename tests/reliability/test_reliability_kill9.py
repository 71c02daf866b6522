"""kill -9 the real server during a 100,000-event load; every acknowledged event survives once.

A real ``python -m microseg.api`` process (uvicorn) serves a fresh project. Four client
threads post 100 batches of 1,000 events (odd batches ``wait=true``: answered after the
DuckDB commit; even ones ``wait=false``: answered after the spool fsync). Once a third of the
batches are acknowledged the server gets SIGKILL. After a restart (the spool is recovered at
startup) the store must hold every acknowledged event exactly once, and unacknowledged ones at
most once. Then the client re-sends all 100,000 events (a retry after the crash) and every
event is stored exactly once; the answers' accepted + duplicates add up to what was sent.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from reliability_support import (
    free_port,
    iso,
    start_server,
    stop_server,
    stored_event_counts,
)

from microseg.api.keys import create_key
from microseg.workspace import Workspace

BATCHES, PER_BATCH = 100, 1000
TOTAL = BATCHES * PER_BATCH
KILL_AFTER = BATCHES // 3
TS = iso()


def batch(b: int) -> list[dict[str, Any]]:
    """Batch ``b``: 1,000 events with globally unique ids, a mix of event types and users."""
    return [
        {
            "event_id": f"k{b}-{i}",
            "event_type": "page_view" if i % 4 else "product_view",
            "timestamp": TS,
            "user_id": f"u{(b * PER_BATCH + i) % 5000}",
            "url": f"/p/{i % 50}",
        }
        for i in range(PER_BATCH)
    ]


def test_kill_9_during_100k_events_keeps_every_acknowledged_event_once(project: Path) -> None:
    with Workspace.open(project) as ws:
        _, key = create_key(ws.store, ws.keys, "collector", name="kill9")
    headers = {"X-API-Key": key}
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/events/batch"
    proc = start_server(project, port)
    acked: set[int] = set()
    answers: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    bodies = {b: batch(b) for b in range(BATCHES)}
    started = time.monotonic()

    def send(b: int) -> None:
        if stop.is_set():
            return
        wait = "true" if b % 2 else "false"
        try:
            r = httpx.post(
                f"{url}?wait={wait}", json={"events": bodies[b]}, headers=headers, timeout=60
            )
        except httpx.TransportError:
            return  # no answer: not acknowledged; the client retries later
        assert r.status_code == (200 if wait == "true" else 202), r.text[:500]
        with lock:
            acked.add(b)
            answers[b] = r.json()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send, b) for b in range(BATCHES)]
        deadline = time.monotonic() + 90
        while len(acked) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        stop.set()
        proc.wait(timeout=10)
        for f in futures:
            f.result()
    killed_with = set(acked)
    load_seconds = time.monotonic() - started
    assert KILL_AFTER <= len(killed_with) < BATCHES, "the kill must land mid-stream"
    for b, answer in answers.items():  # acknowledgements were honest about what they were
        if b % 2:
            assert answer["status"] == "committed" and answer["accepted"] == PER_BATCH, answer
        else:
            assert answer["status"] == "spooled", answer

    # Restart: startup imports the spool segments the killed process left; stop gracefully.
    stop_server(start_server(project, port))
    stored = stored_event_counts(project)
    doubled = {e: n for e, n in stored.items() if n != 1}
    assert not doubled, f"{len(doubled)} events stored more than once"
    lost = [e["event_id"] for b in killed_with for e in bodies[b] if e["event_id"] not in stored]
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {lost[:5]}"
    sent_ids = {e["event_id"] for body in bodies.values() for e in body}
    assert set(stored) <= sent_ids  # nothing invented; unacknowledged ones at most once
    after_crash = len(stored)

    # The client retries everything (it cannot know what the crash kept): exactly once.
    proc = start_server(project, port)

    def resend(b: int) -> dict[str, Any]:
        r = httpx.post(url, json={"events": bodies[b]}, headers=headers, timeout=120)
        assert r.status_code == 200, r.text[:500]
        return dict(r.json())

    with ThreadPoolExecutor(4) as pool:
        retried = list(pool.map(resend, range(BATCHES)))
    stop_server(proc)
    totals = {k: sum(a[k] for a in retried) for k in ("accepted", "duplicates", "quarantined")}
    stored = stored_event_counts(project)
    assert len(stored) == TOTAL and set(stored.values()) == {1}
    assert totals == {"accepted": TOTAL - after_crash, "duplicates": after_crash, "quarantined": 0}
    assert not list((project / ".microseg" / "spool").glob("seg-*"))
    print(
        f"kill -9 after {len(killed_with)}/{BATCHES} acknowledged batches "
        f"({load_seconds:.1f} s of load); {after_crash} events survived the crash; "
        f"lost 0, duplicates 0; retry accepted {totals['accepted']}"
    )
