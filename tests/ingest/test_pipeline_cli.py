"""CLI: `microseg import` and `microseg quarantine list/replay`, user errors in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import microseg.cli as cli_mod
from microseg.cli import main

CSV = (
    "event_id,event_type,timestamp,user_id,price\n"
    "c1,product_view,2024-05-01 10:00:00,u1,3\n"
    "c2,wishlist_add,2024-05-01 10:00:00,u1,3\n"
)


def run(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process (as the console script does); returns (code, stdout, stderr)."""
    cli_mod.console.width = 250
    cli_mod.err_console.width = 250
    code = 0
    try:
        main(["--project", str(root), *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-project")
    main(["init", str(root)])
    (root / "events.csv").write_text(CSV)
    return root


def test_import_list_and_replay(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project)
    code, out, err = run(capsys, project, "import", "events.csv")
    assert code == 0, err
    assert "read 2" in out and "stored 1" in out and "unknown_event_type" in out
    code, out, err = run(capsys, project, "quarantine", "list")
    assert code == 0, err
    assert "unknown_event_type" in out and "1 quarantined" in out
    settings = project / "microseg.yaml"
    settings.write_text(
        settings.read_text().replace(
            "  events:\n", "  events:\n    wishlist_add: {properties: {price: currency}}\n", 1
        )
    )
    code, out, err = run(capsys, project, "quarantine", "replay")
    assert code == 0, err
    assert "stored 1" in out
    code, out, err = run(capsys, project, "quarantine", "replay")
    assert "replayed 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("import", "missing.csv"), "file not found"),
        (("import", "events.csv", "--map", "timestamp=event_tme"), "did you mean"),
        (("import", "events.csv", "--source", "nope"), "no source 'nope'"),
    ],
)
def test_user_errors_are_one_line(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    message: str,
) -> None:
    monkeypatch.chdir(project)
    code, _, err = run(capsys, project, *args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_outside_a_project(tmp_path: Path) -> None:
    """One real process: the exit code and the one-line message of the installed entry point."""
    r = subprocess.run(
        [sys.executable, "-c", "from microseg.cli import main; main()", "quarantine", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert r.returncode != 0 and "microseg init" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
