"""`identity` and `crm` commands through Typer's CliRunner on a fresh app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from microseg.cli import STATE, console
from microseg.cli import identity as identity_cli
from microseg.config.project import Project
from microseg.errors import ConflictError
from microseg.workspace import Workspace


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "proj"
    Project.init(root, "cli-test")
    (root / "events.csv").write_text(
        "event_id,event_type,timestamp,user_id,anonymous_id\n"
        "e1,page_view,2024-05-01T10:00:00Z,,a1\n"
        "e2,page_view,2024-05-01T10:01:00Z,u1,a1\n"
        "e3,page_view,2024-05-01T10:02:00Z,u2,\n"
    )
    with Workspace.open(root) as ws:
        ws.import_events(root / "events.csv")
    old, old_width = STATE["project"], console._width
    STATE["project"] = root
    console.width = 300  # the shared console is created at import with the terminal's width
    yield root
    STATE["project"], console._width = old, old_width


def app() -> typer.Typer:
    a = typer.Typer()
    identity_cli.register(a)
    return a


def test_resolve_merges_unmerge_and_manual_merge(project: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(app(), ["identity", "resolve"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "merges 1 deterministic + 0 probabilistic" in out.output
    listed = runner.invoke(app(), ["identity", "merges"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0 and "1 merges" in listed.output  # table cells may wrap
    with Workspace.open(project) as ws:
        merge_id = ws.store.scalar("SELECT merge_id FROM identity_merges")
    undone = runner.invoke(app(), ["identity", "unmerge", merge_id])
    assert undone.exit_code == 0 and "1 ids and 0 attributes back" in undone.output
    refused = runner.invoke(app(), ["identity", "resolve"], env={"COLUMNS": "200"})
    assert "refused 1 × unmerged_pair" in refused.output
    shown = runner.invoke(app(), ["identity", "refusals"], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "1 refused links" in shown.output
    blocked = runner.invoke(app(), ["identity", "merge", "user_id:u1", "user_id:u2"])
    assert isinstance(blocked.exception, ConflictError)  # main() prints it as one line, exit 1
    forced = runner.invoke(
        app(),
        ["identity", "merge", "user_id:u1", "user_id:u2", "--override", "--reason", "same person"],
    )
    assert forced.exit_code == 0 and "merged into" in forced.output
    with Workspace.open(project) as ws:
        assert ws.profile_id("user_id:u1") == ws.profile_id("user_id:u2")


def test_crm_import_command(project: Path) -> None:
    (project / "crm.csv").write_text(
        "cust,Email,Tier,junk\nu1,U1@Example.com,gold,x\n,nobody@x.io,silver,y\n"
    )
    out = CliRunner().invoke(
        app(),
        [
            "crm",
            "import",
            str(project / "crm.csv"),
            "--id-column",
            "cust",
            "--map",
            "Tier=loyalty_tier",
            "--map",
            "junk=",
        ],
        env={"COLUMNS": "250"},
    )
    assert out.exit_code == 0, out.output
    assert "imported 1" in out.output and "quarantined 1 × missing_identity" in out.output
    with Workspace.open(project) as ws:
        attrs = dict(ws.store.rows("SELECT name, value FROM profile_attributes"))
        assert attrs == {"loyalty_tier": "gold"}
        assert ws.store.scalar("SELECT count(*) FROM pii_vault WHERE field = 'email'") == 1
    bad = CliRunner().invoke(
        app(), ["crm", "import", str(project / "crm.csv"), "--id-column", "cust", "--map", "oops"]
    )
    assert bad.exit_code != 0 and "column=attribute" in bad.output
