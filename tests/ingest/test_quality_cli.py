"""CLI: `microseg quality report [--json]`, `quality outliers`, `synth` (registered by cli/quality.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import microseg.cli as cli_mod
from microseg.cli import quality as quality_cli


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def _root() -> None:  # a group, like the real app
        pass

    quality_cli.register(a)
    return a


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    from microseg.workspace import Workspace

    with Workspace.init(tmp_path) as ws:
        csv = tmp_path / "e.csv"
        csv.write_text(
            "event_id,event_type,timestamp,user_id\n"
            + "".join(f"e{i},page_view,2024-05-0{1 + i % 5} 10:00:00,u{i % 4}\n" for i in range(20))
            + "x,bogus,2024-05-01 10:00:00,u1\n"
        )
        ws.import_events(csv)
    return tmp_path


def test_report_table_and_json(
    app: typer.Typer, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli_mod.STATE, "project", project)
    cli_mod.console.width = 250
    runner = CliRunner()
    r = runner.invoke(app, ["quality", "report"])
    assert r.exit_code == 0, r.output
    assert "quarantine_rate" in r.output and "Data quality: 20 events" in r.output
    r = runner.invoke(app, ["quality", "report", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["events"] == 20
    rate = next(m for m in data["metrics"] if m["name"] == "quarantine_rate")
    assert rate["value"] == pytest.approx(1 / 21) and rate["status"] == "warn"
    r = runner.invoke(app, ["quality", "report", "--fail-on", "warn"])
    assert r.exit_code == 1


def test_outliers_command(app: typer.Typer, project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli_mod.STATE, "project", project)
    r = CliRunner().invoke(app, ["quality", "outliers", "--save"])
    assert r.exit_code == 0, r.output
    assert "0 outlier profiles saved" in r.output


def test_synth_command(app: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    r = CliRunner().invoke(
        app, ["synth", "--events", "5000", "--profiles", "200", "--out", str(out), "--seed", "2"]
    )
    assert r.exit_code == 0, r.output
    assert out.exists() and (tmp_path / "s.truth.parquet").exists()
    assert "wrote 5,000 events of 200 profiles" in r.output
