"""Real-time segments through the API: collected events change what /v1/decide serves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from api_support import event, make_keys
from fastapi import FastAPI
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.realtime import RealtimeBridge, bridge_for
from microseg.segments import RealtimeEvaluator, parse_segment
from microseg.store import utcnow
from microseg.workspace import Workspace


def busy_app(
    project: Path,
) -> tuple[Workspace, dict[str, str], RealtimeBridge, FastAPI]:
    """An app serving the real-time segment ``busy`` (>= 2 page_views in the last hour),
    swept only on demand."""
    ws = Workspace.open(project)
    keys = make_keys(ws)
    busy = parse_segment({"name": "busy", "rule": {"event": "page_view", "last": "1h", "gte": 2}})
    evaluator = RealtimeEvaluator.from_store(
        ws.store, ws.settings, [busy], start=utcnow() - timedelta(hours=1)
    )
    bridge = RealtimeBridge(evaluator, ws.store)
    app = create_app(ws, ApiSettings(sweep_seconds=3600), realtime=bridge)
    return ws, keys, bridge, app


def test_collected_events_enter_a_realtime_segment(project: Path) -> None:
    ws, keys, bridge, app = busy_app(project)
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


def test_sweep_settles_in_chunks_releasing_the_lock_between_them(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import microseg.api.realtime as realtime_mod

    monkeypatch.setattr(realtime_mod, "SWEEP_CHUNK", 4)
    ws, keys, bridge, app = busy_app(project)
    evaluator = bridge.evaluator
    holds: list[bool] = []
    sizes: list[int] = []
    original = evaluator.sweep

    def sweep_chunk(now: object, limit: int | None = None) -> list[object]:
        holds.append(bridge._lock.locked())  # each chunk runs under the lock
        changes = original(now, limit)  # type: ignore[arg-type]
        sizes.append(len(changes))
        return changes

    monkeypatch.setattr(evaluator, "sweep", sweep_chunk)
    with TestClient(app) as client:
        collect = {"X-API-Key": keys["collector"]}
        decide = {"X-API-Key": keys["decision-reader"]}
        users = [f"c{i}" for i in range(10)]
        batch = [event(100 + 2 * i + k, user=u) for i, u in enumerate(users) for k in (0, 1)]
        assert client.post("/v1/events/batch", json=batch, headers=collect).json()["accepted"] == 20
        assert all(
            client.get(f"/v1/decide/{u}", headers=decide).json()["segments"] == ["busy"]
            for u in users
        )
        state = app.state.services.state
        later = utcnow() + timedelta(hours=2)
        holds.clear()  # on_event settles due boundaries first through sweep() too
        sizes.clear()
        assert bridge.sweep(state, later) == 10  # every exit, at most 4 per hold of the lock
        assert len(holds) >= 3 and all(holds) and max(sizes) <= 4 and sum(sizes) == 10
        assert not evaluator.has_due(later)
        assert all(
            client.get(f"/v1/decide/{u}", headers=decide).json()["segments"] == [] for u in users
        )
        assert bridge.stats()["lock_max_ms_sweep"] >= 0
    ws.close()
