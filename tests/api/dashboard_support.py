"""A small synthetic project for the dashboard tests, with planted ground truth.

80 users over the last four weeks: sessions opened by a page view carrying a marketing
``channel`` (a property added to the taxonomy), product views and purchases with revenue
(users of the "bold" experiment arm buy more often). Three segments are computed at four
weekly ``as_of`` times (a size trend), and an experiment has every profile assigned and
exposed three weeks ago.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.keys import ROLES, create_key
from microseg.api.routers import dashboard
from microseg.experiments.assignment import ExperimentSpec
from microseg.experiments.store import assign_profiles, record_exposures, save_experiment
from microseg.segments.parse import project_segment_files
from microseg.store.duckdb_store import utcnow
from microseg.workspace import Workspace

CHANNELS = ("email", "search", "social", "direct")
SEGMENTS = {
    "buyers": {"event": "purchase", "last": "30d", "gte": 1},
    "engaged": {"event": "page_view", "last": "30d", "gte": 4},
    "recent_viewers": {"event": "product_view", "last": "7d", "gte": 1},
    "repeat_buyers": {"trait": "orders_30d", "gte": 2},
}
EXPERIMENT = "hero_banner"
N_USERS = 80


@dataclass
class Project:
    root: Path
    workspace: Workspace
    keys: dict[str, str]
    events: pd.DataFrame


def write_project(root: Path) -> None:
    """A project whose page views carry a ``channel`` and whose only segments are ours."""
    Workspace.init(root, "dashboard").close()
    settings = root / "microseg.yaml"
    text = settings.read_text()
    old = "page_view: {properties: {url: string, referrer: string,"
    assert old in text
    settings.write_text(text.replace(old, old + " channel: string,"))
    for path in project_segment_files(root):
        path.unlink()
    for name, rule in SEGMENTS.items():
        (root / "segments" / f"{name}.yaml").write_text(
            json.dumps({"name": name, "description": f"synthetic {name}", "rule": rule})
        )


def synthetic_events(seed: int = 11) -> pd.DataFrame:
    """Rows ready to import (timestamps in the past four weeks, never in the future)."""
    rng = np.random.default_rng(seed)
    now = utcnow().replace(microsecond=0)
    rows: list[dict[str, object]] = []
    for u in range(N_USERS):
        user = f"u{u:02d}"
        for s in range(int(rng.integers(1, 5))):
            t = now - timedelta(days=float(rng.uniform(0.2, 27)))
            sid = f"{user}-s{s}"
            common = {"user_id": user, "session_id": sid}
            rows.append(
                {
                    **common,
                    "event_type": "page_view",
                    "timestamp": t,
                    "channel": CHANNELS[int(rng.integers(0, len(CHANNELS)))],
                    "url": "/home",
                }
            )
            for k in range(int(rng.integers(0, 4))):
                rows.append(
                    {
                        **common,
                        "event_type": "product_view",
                        "timestamp": t + timedelta(minutes=2 + k),
                        "product_id": f"sku{int(rng.integers(0, 9))}",
                        "category": "shoes",
                        "price": 40.0,
                    }
                )
            if rng.random() < (0.45 if u % 2 else 0.2):
                rows.append(
                    {
                        **common,
                        "event_type": "purchase",
                        "timestamp": t + timedelta(minutes=9),
                        "order_id": f"o-{user}-{s}",
                        "revenue": float(rng.integers(10, 200)),
                    }
                )
    df = pd.DataFrame(rows)
    df.insert(0, "event_id", [f"ev{i}" for i in range(len(df))])
    return df


def build_project(root: Path) -> Project:
    """Write, import, compute segments weekly and run an experiment; keys for every role."""
    write_project(root)
    events = synthetic_events()
    path = root / "events.jsonl"
    out = events.assign(timestamp=events["timestamp"].map(lambda t: t.isoformat() + "Z"))
    path.write_text("\n".join(json.dumps(r) for r in records(out)))
    ws = Workspace.open(root, actor="test")
    result = ws.import_events(path)
    assert result.inserted == len(events) and result.quarantined == 0, result.reasons
    ws.compute_traits()
    now = utcnow()
    for weeks_ago in (3, 2, 1, 0):
        ws.compute_segments(as_of=now - timedelta(weeks=weeks_ago, minutes=1))
    spec = ExperimentSpec.model_validate(
        {
            "key": EXPERIMENT,
            "variants": [{"name": "control"}, {"name": "bold"}],
            "control": "control",
        }
    )
    save_experiment(ws.store, spec)
    profiles = [str(r[0]) for r in ws.store.rows("SELECT profile_id FROM profiles")]
    assign_profiles(ws.store, EXPERIMENT, profiles)
    exposed = pd.DataFrame({"profile_id": profiles, "exposed_at": now - timedelta(days=28)})
    record_exposures(ws.store, EXPERIMENT, exposed)
    keys = {role: create_key(ws.store, ws.keys, role, name=f"test {role}")[1] for role in ROLES}
    return Project(root, ws, keys, events)


def records(df: pd.DataFrame) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if not _missing(v)} for r in df.to_dict(orient="records")]


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def dashboard_app(ws: Workspace) -> FastAPI:
    """The real app; the dashboard routers are added when app.py does not include them yet."""
    app = create_app(ws, ApiSettings(rate_limit_per_second=10_000, rate_limit_burst=10_000))
    paths = set(route_paths(app))
    if "/v1/dashboard/overview" not in paths:
        app.include_router(dashboard.router, prefix="/v1")
    if "/dashboard" not in paths:
        app.include_router(dashboard.pages)
    return app


def route_paths(app: FastAPI) -> dict[str, list[tuple[str, Any]]]:
    """Every route of the app (through included routers): path -> [(method, original route)]."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for ctx in iter_route_contexts(app.routes):
        for method in sorted(ctx.methods or ()):
            out.setdefault(str(ctx.path), []).append((method, ctx.original_route))
    return out


@pytest.fixture(scope="module")
def dash_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = build_project(tmp_path_factory.mktemp("dash") / "proj")
    yield project
    project.workspace.close()


@pytest.fixture(scope="module")
def dash_client(dash_project: Project) -> Iterator[TestClient]:
    app = dashboard_app(dash_project.workspace)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
