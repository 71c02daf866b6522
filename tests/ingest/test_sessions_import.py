"""Sessionisation at import: configurable timeout, batches continuing sessions, late events."""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from microseg.config.models import ProjectSettings
from microseg.ingest.pipeline import ImportResult, import_events
from microseg.workspace import Workspace

NOW = datetime(2024, 6, 1)


def settings(timeout: float) -> ProjectSettings:
    raw: dict[str, Any] = yaml.safe_load(
        files("microseg.config.templates").joinpath("microseg.yaml").read_text()
    )
    raw["sessions"] = {"timeout_minutes": timeout}
    return ProjectSettings.model_validate(raw)


def load(
    ws: Workspace, tmp_path: Path, name: str, rows: list[tuple[str, str, str]]
) -> ImportResult:
    """rows: (event_id, user_id, 'HH:MM') on 2024-05-01."""
    p = tmp_path / name
    p.write_text(
        "event_id,event_type,timestamp,user_id\n"
        + "".join(f"{e},page_view,2024-05-01 {t}:00,{u}\n" for e, u, t in rows)
    )
    return import_events(ws.store, ws.settings, ws.keys, p, source_name=name, now=NOW)


def sessions(ws: Workspace) -> dict[str, str]:
    return dict(ws.store.rows("SELECT event_id, session_id FROM events"))


def groups(ws: Workspace) -> list[list[str]]:
    """Events grouped by session, sorted, for comparison."""
    by: dict[str, list[str]] = {}
    for e, s in sessions(ws).items():
        by.setdefault(s, []).append(e)
    return sorted(sorted(v) for v in by.values())


def test_timeout_splits_sessions_per_user(tmp_path: Path) -> None:
    with Workspace.ephemeral(settings(30)) as ws:
        load(
            ws,
            tmp_path,
            "a.csv",
            [
                ("a1", "u1", "10:00"),
                ("a2", "u1", "10:20"),
                ("a3", "u1", "10:51"),
                ("b1", "u2", "10:21"),
            ],
        )
        assert groups(ws) == [["a1", "a2"], ["a3"], ["b1"]]
        assert all(s.startswith("ms-") for s in sessions(ws).values())


def test_timeout_is_configurable(tmp_path: Path) -> None:
    with Workspace.ephemeral(settings(60)) as ws:
        load(
            ws,
            tmp_path,
            "a.csv",
            [("a1", "u1", "10:00"), ("a2", "u1", "10:20"), ("a3", "u1", "10:51")],
        )
        assert groups(ws) == [["a1", "a2", "a3"]]
    with Workspace.ephemeral(settings(10)) as ws:
        load(
            ws,
            tmp_path,
            "a.csv",
            [("a1", "u1", "10:00"), ("a2", "u1", "10:20"), ("a3", "u1", "10:25")],
        )
        assert groups(ws) == [["a1"], ["a2", "a3"]]


def test_second_batch_continues_open_session(tmp_path: Path) -> None:
    with Workspace.ephemeral(settings(30)) as ws:
        load(ws, tmp_path, "a.csv", [("a1", "u1", "10:00"), ("a2", "u1", "10:10")])
        first = sessions(ws)["a1"]
        load(ws, tmp_path, "b.csv", [("b1", "u1", "10:30"), ("b2", "u1", "11:30")])
        s = sessions(ws)
        assert s["b1"] == first
        assert s["b2"] != first
        assert groups(ws) == [["a1", "a2", "b1"], ["b2"]]


def test_long_open_session_keeps_its_id_when_continued(tmp_path: Path) -> None:
    with Workspace.ephemeral(settings(30)) as ws:
        first = [
            (f"a{i}", "u1", f"{9 + i // 6:02d}:{(i % 6) * 10:02d}") for i in range(9)
        ]  # 09:00..10:20
        load(ws, tmp_path, "a.csv", first)
        before = sessions(ws)
        assert len(set(before.values())) == 1
        load(ws, tmp_path, "b.csv", [("b1", "u1", "10:45")])
        after = sessions(ws)
        assert after["b1"] == before["a0"]
        assert {after[e] for e in before} == {before["a0"]}


def test_late_event_bridges_two_sessions(tmp_path: Path) -> None:
    with Workspace.ephemeral(settings(30)) as ws:
        load(ws, tmp_path, "a.csv", [("a1", "u1", "10:00"), ("a2", "u1", "10:50")])
        assert groups(ws) == [["a1"], ["a2"]]
        load(ws, tmp_path, "late.csv", [("late", "u1", "10:25")])
        assert groups(ws) == [["a1", "a2", "late"]]
        # the merged session keeps the id derived from its start
        assert len(set(sessions(ws).values())) == 1


def test_source_session_ids_are_kept(tmp_path: Path) -> None:
    with Workspace.ephemeral(settings(30)) as ws:
        p = tmp_path / "s.csv"
        p.write_text(
            "event_id,event_type,timestamp,user_id,session_id\n"
            "x1,page_view,2024-05-01 10:00:00,u1,web-1\n"
            "x2,page_view,2024-05-01 15:00:00,u1,web-1\n"
            "x3,page_view,2024-05-01 15:01:00,u1,\n"
        )
        import_events(ws.store, ws.settings, ws.keys, p, now=NOW)
        s = sessions(ws)
        assert s["x1"] == s["x2"] == "web-1"
        assert s["x3"].startswith("ms-")


def test_sessionisation_is_deterministic(tmp_path: Path) -> None:
    rows = [("a1", "u1", "10:00"), ("a2", "u1", "11:00"), ("b1", "u2", "10:00")]
    with Workspace.ephemeral(settings(30)) as w1, Workspace.ephemeral(settings(30)) as w2:
        load(w1, tmp_path, "a.csv", rows)
        load(w2, tmp_path, "a.csv", list(reversed(rows)))
        assert sessions(w1) == sessions(w2)
