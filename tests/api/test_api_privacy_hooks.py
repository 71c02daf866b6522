"""Consent and erasure through the API take effect at once in the running server's memory."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from api_support import event, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.realtime import RealtimeBridge
from microseg.segments import RealtimeEvaluator, parse_segment
from microseg.store import utcnow
from microseg.workspace import Workspace


def test_consent_and_erasure_reach_the_live_state(project: Path) -> None:
    ws = Workspace.open(project)
    keys = make_keys(ws)
    reachable = parse_segment(
        {
            "name": "reachable",
            "rule": {"all": [{"event": "page_view", "last": "1h"}, {"consent": "email"}]},
        }
    )
    evaluator = RealtimeEvaluator.from_store(
        ws.store, ws.settings, [reachable], start=utcnow() - timedelta(hours=1)
    )
    app = create_app(
        ws, ApiSettings(sweep_seconds=3600), realtime=RealtimeBridge(evaluator, ws.store)
    )
    collect = {"X-API-Key": keys["collector"]}
    decide = {"X-API-Key": keys["decision-reader"]}
    admin = {"X-API-Key": keys["admin"]}
    with TestClient(app) as client:
        r = client.post("/v1/events/batch?wait=true", json=[event(1, user="c1")], headers=collect)
        assert r.status_code in (200, 202), r.text
        assert client.get("/v1/decide/c1", headers=decide).json()["segments"] == []
        pid = client.get("/v1/decide/c1", headers=decide).json()["profile_id"]
        body = {"purpose": "email", "granted": True, "source": "banner"}
        assert client.post("/v1/consents/user_id:c1", json=body, headers=collect).status_code < 300
        # no new event needed: the grant re-evaluates the segment at once
        assert client.get("/v1/decide/c1", headers=decide).json()["segments"] == ["reachable"]
        body["granted"] = False
        assert client.post("/v1/consents/user_id:c1", json=body, headers=collect).status_code < 300
        assert client.get("/v1/decide/c1", headers=decide).json()["segments"] == []
        erased = client.post(
            "/v1/subjects/user_id:c1/erase", json={"reason": "ticket 7"}, headers=admin
        )
        assert erased.status_code == 200, erased.text
        gone = client.get("/v1/decide/c1", headers=decide)
        assert gone.status_code == 404 and gone.headers["content-type"].startswith(
            "application/problem+json"
        )
    assert pid not in evaluator.profiles  # the real-time evaluator forgot the person too
    assert all(pid not in members for members in evaluator.members.values())
    ws.close()
