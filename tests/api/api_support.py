"""Fixtures for the HTTP API tests: a real project on disk, keys for every role, a client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.keys import ROLES, create_key
from microseg.workspace import Workspace


def iso(minutes_ago: float = 10.0) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def event(
    i: int | str, *, user: str | None = None, event_type: str = "page_view", **props: Any
) -> dict[str, Any]:
    """A valid page_view event (by default) with a unique id."""
    ev: dict[str, Any] = {
        "event_id": f"e{i}",
        "event_type": event_type,
        "timestamp": iso(),
        "user_id": user or f"u{i}",
    }
    ev.update(props)
    return ev


@dataclass
class Api:
    client: TestClient
    workspace: Workspace
    keys: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    Workspace.init(root, "apitest").close()
    return root


def make_keys(ws: Workspace, rate: float | None = None) -> dict[str, str]:
    return {
        role: create_key(ws.store, ws.keys, role, name=f"test {role}", rate_per_second=rate)[1]
        for role in ROLES
    }


@pytest.fixture
def api(project: Path) -> Iterator[Api]:
    ws = Workspace.open(project, actor="api")
    keys = make_keys(ws)
    app = create_app(ws, ApiSettings(max_batch_events=100, commit_wait_seconds=20))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, ws, keys)
    ws.close()
