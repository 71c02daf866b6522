"""`microseg apikey ...` and `microseg serve` argument checks (the server itself runs in the crash test)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from microseg.api.keys import KEY_RE, active_keys
from microseg.api.server import serve
from microseg.cli import STATE
from microseg.cli.serve import register
from microseg.errors import ConfigError
from microseg.workspace import Workspace


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root(project: Path = typer.Option(Path("."), "--project", "-p")) -> None:
        STATE["project"] = project

    register(app)
    return app


def test_apikey_create_list_revoke(cli: typer.Typer, project: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(
        cli,
        [
            "-p",
            str(project),
            "apikey",
            "create",
            "--role",
            "collector",
            "--name",
            "edge",
            "--rate",
            "50",
        ],
    )
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    match = KEY_RE.match(key)
    assert match
    with Workspace.open(project) as ws:
        stored = active_keys(ws.store)
        assert stored[match.group(1)].role == "collector"
        assert stored[match.group(1)].rate_per_second == 50
    listed = runner.invoke(cli, ["-p", str(project), "apikey", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and match.group(1) in listed.output and key not in listed.output
    revoked = runner.invoke(cli, ["-p", str(project), "apikey", "revoke", match.group(1)])
    assert revoked.exit_code == 0
    with Workspace.open(project) as ws:
        assert active_keys(ws.store) == {}


def test_unknown_role_is_refused(cli: typer.Typer, project: Path) -> None:
    result = CliRunner().invoke(cli, ["-p", str(project), "apikey", "create", "--role", "root"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "roles:" in str(result.exception)


def test_serve_refuses_several_workers_and_keyless_start(project: Path) -> None:
    with pytest.raises(ConfigError, match="one writing process"):
        serve(project, workers=2)
    with pytest.raises(ConfigError, match="no API keys"):
        serve(project, port=1)
