"""Saving a discovered cluster as a segment: batch, real-time and explain agree; bad refs refused."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from microseg.cli import STATE
from microseg.cli import segments as segments_cli
from microseg.discover.segments import cluster_segment, write_segment
from microseg.errors import ConflictError, NotFoundError
from microseg.predict.registry import store_cluster_membership
from microseg.segments import RealtimeEvaluator, compute_segments, explain, parse_segment, preview
from microseg.store import utcnow
from microseg.synth import generate_events
from microseg.workspace import Workspace

AS_OF = datetime(2024, 3, 31)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clusters") / "proj"
    events = root.parent / "events.parquet"
    generate_events(events, 6_000, 600, seed=3)
    with Workspace.init(root, "clusters") as ws:
        for old in (root / "segments").glob("*.yaml"):
            old.unlink()
        ws.import_events(events)
        ws.compute_traits(AS_OF)
        pids = ws.store.df("SELECT profile_id FROM profiles ORDER BY profile_id")["profile_id"]
        labels = pd.Series([i % 4 for i in range(len(pids))], index=pids)
        store_cluster_membership(ws.store, "rfm", labels, {0: "Big spenders", 1: "Browsers"})
    return root


def test_definition_selects_exactly_the_cluster(project: Path) -> None:
    with Workspace.open(project) as ws:
        truth = set(
            ws.store.df("SELECT profile_id FROM cluster_membership WHERE run='rfm' AND cluster=1")[
                "profile_id"
            ]
        )
        definition = cluster_segment(ws.store, "rfm", [1], "browsers")
        assert definition["rule"] == {"trait": "cluster.rfm", "eq": 1}
        assert "Browsers" in definition["description"]
        seg = parse_segment(definition)
        now = utcnow()
        assert preview(ws, seg, now).size == len(truth)
        # point in time: before the run was saved nobody was in a cluster
        assert preview(ws, seg, AS_OF).size == 0
        report = compute_segments(ws, segments=[seg], as_of=now)
        assert report is not None
        members = set(
            ws.store.df("SELECT profile_id FROM memberships WHERE segment='browsers'")["profile_id"]
        )
        assert members == truth
        # the real-time evaluator reads the same label from its trait snapshot
        rt = RealtimeEvaluator.from_store(ws.store, ws.settings, [seg], start=now)
        assert rt.members_of("browsers") == truth
        pid = sorted(truth)[0]
        why = explain(ws, seg, pid, now)
        assert why.member
        two = parse_segment(cluster_segment(ws.store, "rfm", [1, 2], "two"))
        assert preview(ws, two, now).size > len(truth)


def test_unknown_run_and_cluster_are_refused(project: Path) -> None:
    with Workspace.open(project) as ws:
        with pytest.raises(NotFoundError, match="did you mean 'rfm'"):
            cluster_segment(ws.store, "rmf", [1], "x")
        with pytest.raises(NotFoundError, match=r"has clusters \[0, 1, 2, 3\]"):
            cluster_segment(ws.store, "rfm", [9], "x")


def test_write_refuses_overwrite(tmp_path: Path) -> None:
    definition = {"name": "a", "rule": {"trait": "cluster.r", "eq": 1}}
    write_segment(definition, tmp_path)
    with pytest.raises(ConflictError, match="--force"):
        write_segment(definition, tmp_path)
    write_segment(definition, tmp_path, force=True)


def test_cli_from_cluster(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    segments_cli.register(app)
    app.command("noop")(lambda: None)
    monkeypatch.setitem(STATE, "project", project)
    runner = CliRunner()
    result = runner.invoke(app, ["segments", "from-cluster", "rfm", "0,3", "--name", "c03"])
    assert result.exit_code == 0, result.output
    assert "profiles" in result.output
    assert (project / "segments" / "c03.yaml").exists()
    bad = runner.invoke(app, ["segments", "from-cluster", "rfm", "x", "--name", "c"])
    assert bad.exit_code != 0 and "clusters must be numbers" in bad.output
