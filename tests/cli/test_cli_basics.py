"""The CLI as a user meets it: real subprocesses, one-line errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "microseg", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_init_validate_import_and_show(tmp_path: Path) -> None:
    assert run("init", "proj", cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    events = project / "events.csv"
    events.write_text(
        "event_id,event_type,timestamp,user_id,product_id,price\n"
        "e1,product_view,2024-05-01T10:00:00Z,u1,p1,9.5\n"
        "e2,add_to_cart,2024-05-01T10:01:00+02:00,u1,p1,9.5\n"
        "e3,teleport,2024-05-01T10:02:00Z,u1,p1,9.5\n"
        "e4,product_view,2024-05-01T10:03:00Z,u2,p2,not-a-price\n"
    )
    assert run("validate", cwd=project).returncode == 0
    done = run("import", "events.csv", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "stored 2" in done.stdout and "quarantined 2" in done.stdout
    listed = run("quarantine", "list", cwd=project)
    assert "unknown_event_type" in listed.stdout and "invalid_type" in listed.stdout
    shown = run("profiles", "show", "user_id:u1", "--json", cwd=project)
    assert shown.returncode == 0 and '"profile_id"' in shown.stdout


def test_user_mistakes_print_one_line(tmp_path: Path) -> None:
    outside = run("import", "x.csv", cwd=tmp_path)
    assert outside.returncode == 1
    assert outside.stderr.strip().startswith("Error:")
    assert "Traceback" not in outside.stderr
    assert run("init", "p", cwd=tmp_path).returncode == 0
    missing = run("import", "nope.csv", cwd=tmp_path / "p")
    assert missing.returncode == 1 and "file not found" in missing.stderr
    assert "Traceback" not in missing.stderr
    unknown = run("profiles", "show", "user_id:ghost", cwd=tmp_path / "p")
    assert unknown.returncode == 1 and "no profile" in unknown.stderr
