"""Soak diagnostics: the sampler reports the real structure sizes; the plateau maths is right."""

from __future__ import annotations

import json
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.keys import create_key
from microseg.api.realtime import RealtimeBridge
from microseg.bench import soak_diag
from microseg.workspace import Workspace


def _events(n: int, users: int, start: int = 0) -> list[dict[str, Any]]:
    ts = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    return [
        {
            "event_id": f"d{start + i}",
            "event_type": "page_view" if i % 2 == 0 else "purchase",
            "timestamp": ts,
            "user_id": f"u{(start + i) % users}",
            "price": 1.0,
        }
        for i in range(n)
    ]


@pytest.fixture
def served(tmp_path: Path) -> Any:
    root = tmp_path / "proj"
    Workspace.init(root, "diag").close()
    for f in (root / "segments").glob("*.yaml"):
        f.unlink()
    (root / "segments" / "live.yaml").write_text(
        "name: live\nrule:\n  event: page_view\n  last: 2m\n  gte: 1\n"
    )
    ws = Workspace.open(root, actor="api")
    key = create_key(ws.store, ws.keys, "admin", rate_per_second=1e6)[1]
    bridge = RealtimeBridge.from_workspace(ws)
    assert bridge is not None
    app = create_app(ws, ApiSettings(fsync=False), realtime=bridge)
    with TestClient(app) as client:
        sampler = soak_diag.Sampler(
            lambda: app.state.services, lambda: bridge, lambda: ws.store, top=5
        )
        yield client, {"X-API-Key": key}, sampler, app.state.services, bridge
    ws.close()


def test_sampler_counts_what_the_server_holds(served: Any) -> None:
    client, headers, sampler, services, bridge = served
    before = sampler.sample()
    assert before["sizes"]["serving.profiles"] == 0
    r = client.post("/v1/events/batch?wait=true", json={"events": _events(40, 10)}, headers=headers)
    assert r.status_code == 200, r.text
    after = sampler.sample()
    sizes = after["sizes"]
    assert sizes["serving.profiles"] == len(services.state) == 10
    assert sizes["serving.id_keys"] == 10
    assert sizes["rt.profiles"] == 10
    # only page_view is kept (the segment's only event type): 20 of the 40 events
    assert sizes["rt.events_kept"] == 20
    # u0, u2, ... got the page_views (even indexes, 10 users): 5 members
    assert sizes["rt.members"] == {"live": 5} == {"live": len(bridge.evaluator.members["live"])}
    assert sizes["rt.due"] == 5 == bridge.evaluator.pending_timers()
    assert sizes["collector"]["committed_events"] == 40
    assert sizes["spool.current_ids"] == 0
    assert sizes["limiter.buckets"] == 1
    duck = after["duckdb"]
    assert duck["memory_mib"] >= 0 and "database_size" in duck and "error" not in duck
    assert after["rss_mib"] > 0 and after["py_blocks"] > 0 and after["threads"] >= 1
    assert after["arrow"]["allocated_mib"] >= 0
    py = after["pymalloc"]
    assert py is not None and py["arenas"] >= py["allocated_mib"] > 1  # 1 MiB arenas
    assert after["smaps"]["anonymous"] > 0 and after["smaps"]["file_backed"] > 0
    info = soak_diag.mallinfo()
    if info is not None:  # glibc
        assert info["in_use"] > 0 and after["malloc"] is not None


def test_tracemalloc_growth_names_the_growing_line() -> None:
    import tracemalloc

    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start(1)
    try:
        sampler = soak_diag.Sampler(lambda: None, lambda: None, lambda: None, top=3)
        sampler.sample()  # first snapshot
        hoard = [bytearray(1024) for _ in range(4000)]  # ~4 MiB from one line
        growth = sampler.sample()["tracemalloc_growth"]
        assert "test_soak_diag.py" in growth[0], growth
        assert len(hoard) == 4000
    finally:
        if not was:
            tracemalloc.stop()


def test_install_from_env_writes_json_lines(tmp_path: Path) -> None:
    assert soak_diag.install_from_env(lambda: None, lambda: None, lambda: None, env={}) is None
    target = tmp_path / "diag.jsonl"
    env = {soak_diag.ENV_ON: "1", soak_diag.ENV_FILE: str(target), soak_diag.ENV_SECONDS: "0.05"}
    thread = soak_diag.install_from_env(lambda: None, lambda: None, lambda: None, env=env)
    assert thread is not None
    deadline = threading.Event()
    while thread.samples < 2 and not deadline.wait(0.02):
        pass
    thread.stop()
    assert not thread.is_alive()
    rows = soak_diag.read_samples(target)
    assert len(rows) == thread.samples >= 3  # the periodic ones plus the final one
    assert all("rss_mib" in r and "sizes" not in r for r in rows)
    target.write_text(target.read_text() + "not json\n")
    assert len(soak_diag.read_samples(target)) == len(rows)


def test_sampler_survives_a_closed_store(tmp_path: Path) -> None:
    ws = Workspace.ephemeral()
    ws.close()
    out = soak_diag.Sampler(lambda: None, lambda: None, lambda: ws.store).sample()
    assert "error" in out["duckdb"]
    json.dumps(out, default=str)


def test_plateau_separates_growth_from_a_plateau() -> None:
    growing = [(float(t), 100 + 10 * t / 60) for t in range(0, 601, 5)]  # 10 MiB/min
    flat_after = [(float(t), 100 + min(t, 180) / 6) for t in range(0, 601, 5)]  # flat from 180 s
    g = soak_diag.plateau(growing, warmup=120)
    assert g["slope"] == pytest.approx(10, abs=1e-6)
    assert g["last_half_slope"] == pytest.approx(10, abs=1e-6)
    assert g["after_warmup"] == pytest.approx(120) and g["end"] == pytest.approx(200)
    f = soak_diag.plateau(flat_after, warmup=60)
    assert f["slope"] > 0  # the ramp between 60 and 180 s still counts ...
    assert f["last_half_slope"] == pytest.approx(0, abs=1e-6)  # ... but the plateau shows
    assert math.isnan(soak_diag.plateau(growing, warmup=10_000)["slope"])  # no samples after
    # a 25-minute run growing 10 MiB/min until 870 s: only the last 10 minutes are flat
    long = [(float(t), 100 + min(t, 870) / 6) for t in range(0, 1501, 5)]
    late = soak_diag.plateau(long, warmup=180)
    assert late["last_half_slope"] > 0.05  # the end of the ramp is inside the last half
    assert late["last_10min_slope"] == pytest.approx(0, abs=1e-6)
    assert soak_diag.plateau(growing, warmup=120)["last_10min_slope"] == pytest.approx(10)


def test_summarize_reads_every_series() -> None:
    rows = [
        {
            "t": float(t),
            "rss_mib": 500 + t / 60,
            "py_blocks": 1_000_000,
            "gc_objects": 5000,
            "malloc": {"in_use": 100.0, "free": 10.0, "mmapped": 5.0},
            "arrow": {"allocated_mib": 0.0},
            "duckdb": {"memory_mib": 50 + 2 * t / 60},
            "sizes": {"serving.profiles": 1000 + t},
        }
        for t in range(0, 600, 30)
    ]
    s = soak_diag.summarize(rows, warmup=180)
    assert s["rss_mib"]["slope"] == pytest.approx(1, abs=1e-6)
    assert s["duckdb_memory_mib"]["slope"] == pytest.approx(2, abs=1e-6)
    assert s["rss_minus_duckdb_mib"]["slope"] == pytest.approx(-1, abs=1e-6)
    assert s["py_blocks_k"]["slope"] == 0
    assert "tracemalloc_mib" not in s  # not traced: not reported
    assert s["sizes_after_warmup"] == {"serving.profiles": 1180}
    assert s["sizes_end"] == {"serving.profiles": 1570}


def test_attach_samples_for_the_life_of_the_app(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    Workspace.init(root, "attach").close()
    ws = Workspace.open(root, actor="api")
    try:
        key = create_key(ws.store, ws.keys, "admin", rate_per_second=1e6)[1]
        target = tmp_path / "diag.jsonl"
        app = create_app(ws, ApiSettings(fsync=False))
        assert not soak_diag.attach(app, None, ws.store, env={})
        env = {soak_diag.ENV_ON: "1", soak_diag.ENV_FILE: str(target), soak_diag.ENV_SECONDS: "60"}
        assert soak_diag.attach(app, None, ws.store, env=env)
        assert not soak_diag.attach(app, None, ws.store, env=env)  # once: one sampler per app
        with TestClient(app) as client:
            r = client.post(
                "/v1/events/batch?wait=true",
                json={"events": _events(6, 3)},
                headers={"X-API-Key": key},
            )
            assert r.status_code == 200, r.text
        rows = soak_diag.read_samples(target)
        assert len(rows) == 1  # the last sample, written at shutdown (the period is 60 s)
        assert rows[0]["server_trim"] is None  # create_app alone runs no trimmer (serve() does)
        assert rows[0]["sizes"]["serving.profiles"] == 3
        assert rows[0]["sizes"]["collector"]["committed_events"] == 6
        assert "rt.profiles" not in rows[0]["sizes"]  # no real-time bridge
        assert rows[0]["asyncio_tasks"] >= 1
    finally:
        ws.close()
