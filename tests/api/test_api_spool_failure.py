"""A failed spool fsync through the API: the request is refused (503, not acknowledged), the
membership it showed at once stays consistent with the store (its bytes are imported), and the
client's retry is deduplicated."""

from __future__ import annotations

import errno
from pathlib import Path

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
        assert stats["collector"]["spool_sync_failures"] == 1
    assert ws.store.scalar("SELECT count(*) FROM events WHERE event_id = 'e2'") == 1
    members = ws.store.rows("SELECT profile_id FROM memberships WHERE segment = 'seen'")
    assert len(members) == 2
    assert bridge.corrections == 0  # the import agreed with what was shown at once
    ws.close()
