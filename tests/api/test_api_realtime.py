"""Real-time segments through the API: collected events change what /v1/decide serves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from api_support import event, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.realtime import RealtimeBridge, bridge_for
from microseg.segments import RealtimeEvaluator, parse_segment
from microseg.store import utcnow
from microseg.workspace import Workspace


def test_collected_events_enter_a_realtime_segment(project: Path) -> None:
    ws = Workspace.open(project)
    keys = make_keys(ws)
    busy = parse_segment({"name": "busy", "rule": {"event": "page_view", "last": "1h", "gte": 2}})
    evaluator = RealtimeEvaluator.from_store(
        ws.store, ws.settings, [busy], start=utcnow() - timedelta(hours=1)
    )
    bridge = RealtimeBridge(evaluator, ws.store)
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge)
    with TestClient(app) as client:
        collect = {"X-API-Key": keys["collector"]}
        decide = {"X-API-Key": keys["decision-reader"]}
        client.post("/v1/events", json=event(1, user="r1"), headers=collect)
        assert client.get("/v1/decide/r1", headers=decide).json()["segments"] == []
        r = client.post(
            "/v1/events/batch", json=[event(2, user="r1"), event(3, user="r2")], headers=collect
        )
        assert r.json()["accepted"] == 2
        assert client.get("/v1/decide/r1", headers=decide).json()["segments"] == ["busy"]
        assert client.get("/v1/decide/r2", headers=decide).json()["segments"] == []
        # persisted like batch memberships, with history
        pid = ws.profile_id("user_id:r1")
        assert ws.store.rows("SELECT segment FROM memberships WHERE profile_id = ?", [pid]) == [
            ("busy",)
        ]
        # an hour later the window has passed: the sweep settles the exit without a new event
        state = app.state.services.state
        assert bridge.sweep(state, utcnow() + timedelta(hours=2)) == 1
        assert client.get("/v1/decide/r1", headers=decide).json()["segments"] == []
        history = ws.store.rows(
            "SELECT change FROM membership_history WHERE profile_id = ? ORDER BY recorded_at", [pid]
        )
        assert [h[0] for h in history] == ["entered", "exited"]
    ws.close()


def test_serve_bridge_from_project_files(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    segments = project / "segments"
    with Workspace.open(project) as ws:
        # the template segments need traits that are not computed yet: serve without real-time
        assert list(segments.glob("*.yaml"))
        assert bridge_for(ws) is None
        assert "real-time segments disabled" in caplog.text
        for f in segments.glob("*.yaml"):
            f.unlink()
        assert bridge_for(ws) is None  # no segment files
        (segments / "busy.yaml").write_text(
            "name: busy\nrule:\n  event: page_view\n  last: 1h\n  gte: 2\n"
        )
        bridge = bridge_for(ws)
        assert bridge is not None and bridge.store is ws.store
        assert bridge_for(ws, enabled=False) is None
