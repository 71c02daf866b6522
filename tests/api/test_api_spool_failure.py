"""A failed spool fsync through the API: the request is refused (503, not acknowledged), the
membership it showed at once stays consistent with the store (its bytes are imported), and the
client's retry is deduplicated."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from api_support import event, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api import spool as spool_mod
from microseg.api.fastcheck import FastValidator
from microseg.api.realtime import RealtimeBridge
from microseg.segments import RealtimeEvaluator, parse_segment
from microseg.store import utcnow
from microseg.workspace import Workspace

SEEN = {"name": "seen", "rule": {"event": "page_view", "last": "1h", "gte": 1}}


def seen_bridge(ws: Workspace) -> RealtimeBridge:
    evaluator = RealtimeEvaluator.from_store(
        ws.store, ws.settings, [parse_segment(SEEN)], start=utcnow(), history=True
    )
    return RealtimeBridge(
        evaluator, ws.store, FastValidator(ws.settings, ws.keys), evaluator.horizon
    )


def test_a_failed_fsync_is_refused_and_the_retry_is_deduplicated(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = spool_mod._sync_data
    failing = {"on": False}

    def flaky(fd: int) -> None:
        if failing["on"]:
            failing["on"] = False
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(spool_mod, "_sync_data", flaky)
    ws = Workspace.open(project)
    keys = make_keys(ws)
    bridge = seen_bridge(ws)
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge)
    collect = {"X-API-Key": keys["collector"]}
    decide = {"X-API-Key": keys["decision-reader"]}
    with TestClient(app) as client:
        ok = client.post("/v1/events?wait=false", json=event(1, user="a"), headers=collect)
        assert ok.status_code == 202
        failing["on"] = True
        r = client.post("/v1/events?wait=false", json=event(2, user="b"), headers=collect)
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "not acknowledged" in r.json()["detail"]
        # evaluated before the fsync: visible, and the import will store it (bytes spooled)
        assert client.get("/v1/decide/b", headers=decide).json()["segments"] == ["seen"]
        retry = client.post("/v1/events?wait=true", json=event(2, user="b"), headers=collect)
        assert retry.status_code == 200
        body = retry.json()
        assert body["accepted"] + body["duplicates"] == 1  # stored once, whichever got there
        stats = client.get("/v1/admin/stats", headers={"X-API-Key": keys["admin"]}).json()
        assert stats["collector"]["spool_failed_segments"] == 1
        assert stats["realtime"]["provisional_events"] >= 2  # both shown at once
    assert ws.store.scalar("SELECT count(*) FROM events WHERE event_id = 'e2'") == 1
    members = ws.store.rows("SELECT profile_id FROM memberships WHERE segment = 'seen'")
    assert len(members) == 2
    assert bridge.corrections == 0  # the import agreed with what was shown at once
    ws.close()


def test_a_segment_the_spool_cannot_create_is_refused_and_undone(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk refuses the new file: 503, the membership shown at once is taken back when the
    importer reaches the (missing) segment, and the importer keeps going."""
    real_open = os.open
    refuse = {"on": False}

    def flaky_open(path: Any, flags: int, mode: int = 0o777) -> int:
        if refuse["on"] and str(path).endswith(".jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(spool_mod.os, "open", flaky_open)
    ws = Workspace.open(project)
    keys = make_keys(ws)
    bridge = seen_bridge(ws)
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge)
    collect = {"X-API-Key": keys["collector"]}
    decide = {"X-API-Key": keys["decision-reader"]}
    with TestClient(app) as client:
        refuse["on"] = True
        r = client.post("/v1/events?wait=false", json=event(7, user="c"), headers=collect)
        assert r.status_code == 503 and "No space" in r.json()["detail"]
        refuse["on"] = False
        services = app.state.services
        deadline = time.monotonic() + 30
        while services.collector.spool.backlog() and time.monotonic() < deadline:
            time.sleep(0.02)
        while bridge.pending_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        # undone: the event never reached a file, so no membership stays
        assert client.get("/v1/decide/c", headers=decide).status_code == 404
        ok = client.post("/v1/events?wait=true", json=event(7, user="c"), headers=collect)
        assert ok.status_code == 200 and ok.json()["accepted"] == 1
        assert client.get("/v1/decide/c", headers=decide).json()["segments"] == ["seen"]
        assert services.collector.alive()
    assert ws.store.scalar("SELECT count(*) FROM events WHERE event_id = 'e7'") == 1
    ws.close()
