"""CLI: `microseg import` and `microseg quarantine list/replay`, user errors in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CSV = (
    "event_id,event_type,timestamp,user_id,price\n"
    "c1,product_view,2024-05-01 10:00:00,u1,3\n"
    "c2,wishlist_add,2024-05-01 10:00:00,u1,3\n"
)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from microseg.cli import main; main()", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-project")
    r = cli(root, "init", ".")
    assert r.returncode == 0, r.stderr
    (root / "events.csv").write_text(CSV)
    return root


def test_import_and_quarantine_list(project: Path) -> None:
    r = cli(project, "import", "events.csv")
    assert r.returncode == 0, r.stderr
    assert "read 2" in r.stdout and "stored 1" in r.stdout and "unknown_event_type" in r.stdout
    r = cli(project, "quarantine", "list")
    assert r.returncode == 0, r.stderr
    assert "unknown_event_type" in r.stdout and "1 quarantined" in r.stdout


def test_replay_after_declaring_the_event(project: Path) -> None:
    settings = project / "microseg.yaml"
    text = settings.read_text()
    settings.write_text(text.replace("  events:\n", "  events:\n    wishlist_add: {properties: {price: currency}}\n", 1))
    r = cli(project, "quarantine", "replay")
    assert r.returncode == 0, r.stderr
    assert "stored 1" in r.stdout
    r = cli(project, "quarantine", "replay")
    assert "replayed 0" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("import", "missing.csv"), "file not found"),
        (("import", "events.csv", "--map", "timestamp=event_tme"), "did you mean"),
        (("import", "events.csv", "--source", "nope"), "no source 'nope'"),
    ],
)
def test_user_errors_are_one_line(project: Path, args: tuple[str, ...], message: str) -> None:
    r = cli(project, *args)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_outside_a_project(tmp_path: Path) -> None:
    r = cli(tmp_path, "quarantine", "list")
    assert r.returncode != 0 and "microseg init" in r.stderr and "Traceback" not in r.stderr
