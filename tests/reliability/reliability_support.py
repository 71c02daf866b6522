"""Helpers for the reliability suite: real server processes, projects, keys, API clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.keys import ROLES, create_key
from microseg.store import Store
from microseg.workspace import Workspace

# Event types / properties the default project taxonomy declares (see Workspace.init).
PROBLEM_JSON = "application/problem+json"


def iso(minutes_ago: float = 10.0) -> str:
    """An ISO timestamp ``minutes_ago`` in the past (UTC, with offset)."""
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_project(root: Path, name: str = "reliability") -> Path:
    """A freshly initialised project directory."""
    Workspace.init(root, name).close()
    return root


def make_keys(ws: Workspace, rate: float | None = None) -> dict[str, str]:
    """One API key per role."""
    return {
        role: create_key(ws.store, ws.keys, role, name=f"reliability {role}", rate_per_second=rate)[
            1
        ]
        for role in ROLES
    }


def start_server(
    project: Path, port: int, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """``python -m microseg.api`` on ``port``; returns once /v1/health answers 200."""
    full_env = {**os.environ, "MICROSEG_API_DEV": "false", **(env or {})}
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
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"server exited with {proc.returncode}: {err[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("server did not start")


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Graceful stop (SIGTERM: drains the spool, closes the store)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout) in (0, -signal.SIGTERM)


def stored_event_counts(project: Path) -> dict[str, int]:
    """event_id -> number of rows in the project's events table (server must be stopped)."""
    store = Store(project / ".microseg" / "microseg.duckdb")
    try:
        return dict(store.rows("SELECT event_id, count(*) FROM events GROUP BY event_id"))
    finally:
        store.close()


@dataclass
class Api:
    """An in-process app over a real project, with one key per role."""

    client: TestClient
    workspace: Workspace
    keys: dict[str, str]

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return new_project(tmp_path / "proj")


@pytest.fixture
def api(project: Path) -> Iterator[Api]:
    ws = Workspace.open(project, actor="api")
    keys = make_keys(ws)
    app = create_app(
        ws, ApiSettings(max_batch_events=500, commit_wait_seconds=20, max_body_bytes=256 * 1024)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, ws, keys)
    ws.close()


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A 4xx problem+json answer with a non-empty title/detail; returns the body."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body.get("title") or body.get("detail"), body
    return body
