"""CLI: consent, subject, privacy retention, audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from privacy_support import PEOPLE, populate
from typer.testing import CliRunner

from microseg.cli import STATE
from microseg.cli.privacy import register
from microseg.errors import ConfigError, NotFoundError
from microseg.workspace import Workspace


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "proj"
    Workspace.init(root, "clitest").close()
    yaml = root / "microseg.yaml"
    yaml.write_text(
        yaml.read_text().replace(
            "privacy:\n",
            "privacy:\n  retention_days: {events.page_view: 7}\n"
            "  purposes: [email_marketing, ads]\n",
        )
    )
    with Workspace.open(root) as ws:
        pids = populate(ws, tmp_path)
    monkeypatch.setitem(STATE, "project", root)
    return root, pids


def run(*args: str) -> str:
    result = CliRunner().invoke(_app(), list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_consent_commands(project: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    _ = project
    ref = "user_id:" + PEOPLE[0]["user_id"]
    out = run("consent", "set", ref, "ads", "--source", "phone_call", "--expires", "2030-01-01")
    assert "ads granted until 2030-01-01" in out
    assert "email_marketing revoked" in run("consent", "revoke", ref, "email_marketing")
    shown = run("consent", "show", ref, "--history")
    assert "revoked" in shown and "phone_call" in shown and "history" in shown
    with pytest.raises(ConfigError, match="did you mean 'ads'"):
        run("consent", "set", ref, "adz", "--source", "x")
    with pytest.raises(ConfigError, match="not an ISO"):
        run("consent", "set", ref, "ads", "--source", "x", "--expires", "soon")
    csv = tmp_path / "c.csv"
    csv.write_text(f"user_id,purpose,granted\n{PEOPLE[1]['user_id']},ads,yes\nghost,ads,no\n")
    out = run("consent", "import", str(csv))
    assert "imported 1 of 2 rows" in out and "line 3: no profile" in out


def test_subject_retention_audit_commands(
    project: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    root, pids = project
    person = PEOPLE[3]
    pid = pids[person["user_id"]]
    target = tmp_path / "export.json"
    assert "wrote" in run("subject", "export", "email:" + person["email"], "--out", str(target))
    data = json.loads(target.read_text())
    assert data["personal_data"]["phone"] == person["phone"]
    assert "city corrected" in run("subject", "correct", pid, "city", "York")
    assert "(PII, re-encrypted)" in run("subject", "correct", pid, "last_name", "Okafor-Smith")
    assert "removed" in run("subject", "correct", pid, "phone", "--remove")
    with pytest.raises(ConfigError, match="not both"):
        run("subject", "correct", pid, "phone", "x", "--remove")
    audit = run("audit", "show", "--action", "subject.*", "--actor", "cli", "--limit", "2")
    assert "audit log" in audit and "subject." in audit
    with Workspace.open(root) as ws:
        from microseg.privacy.audit import audit_entries

        rows = audit_entries(ws.store, actor="cli", action="subject.*")
        assert list(rows["action"]).count("subject.correct") == 3
    out = run("privacy", "retention", "run", "--now", "2026-04-01", "--dry-run")
    assert "events.page_view: would delete 16 rows" in out  # 4 people x 4 page views
    out = run("privacy", "retention", "run", "--now", "2026-04-01")
    assert "events.page_view: deleted 16 rows" in out
    # erasure needs confirmation unless --yes
    declined = CliRunner().invoke(_app(), ["subject", "erase", pid, "--reason", "r1"], input="n\n")
    assert declined.exit_code == 1
    out = run("subject", "erase", pid, "--reason", "ticket 9", "--yes")
    assert "1 data key(s) shredded" in out and "events:" in out
    with pytest.raises(NotFoundError):
        run("subject", "export", pid)
    assert "no audit entries match" in run("audit", "show", "--about", pid)
