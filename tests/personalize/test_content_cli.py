"""`microseg content ...` through Typer's CliRunner on a real project folder."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from microseg.cli import STATE
from microseg.cli.content import register
from microseg.config.project import Project
from microseg.errors import DefinitionError
from microseg.personalize.content import pii_context
from microseg.workspace import Workspace

CONTENT = """\
blocks:
  cart_reminder:
    tags: [cart]
    placeholders: {first_name: there, discount_code: ""}
    variants:
      - id: email
        channel: email
        device: desktop
        subject: "{{ first_name }}, your cart is waiting"
        text: "Hi {{ first_name }}{% if discount_code %}, code {{ discount_code }}{% endif %}"
      - id: push
        channel: push
        device: mobile
        text: "{{ first_name }}: cart!"
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "proj"
    Project.init(root, "demo")
    (root / "content" / "cart.yaml").write_text(CONTENT)
    monkeypatch.setitem(STATE, "project", root)
    with Workspace.open(root) as ws:
        now = datetime(2026, 1, 1)
        ws.store.execute("INSERT INTO profiles VALUES ('p1', ?, ?, NULL)", [now, now])
        ws.store.execute(
            "INSERT INTO identities VALUES ('user_id:u1', 'user_id', 'u1', 'p1', ?, ?, 'test', NULL)",
            [now, now],
        )
        blob = ws.keys.encrypt("Rui", pii_context("p1", "first_name"))
        ws.store.execute(
            "INSERT INTO pii_vault VALUES ('p1', 'first_name', ?, NULL, ?)", [blob, now]
        )
    return root


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_validate_list_render_history(project: Path) -> None:
    runner, app = CliRunner(), _app()
    done = runner.invoke(app, ["content", "validate"])
    assert done.exit_code == 0 and "1 content blocks, 2 variants valid" in done.output
    listed = runner.invoke(app, ["content", "list"], env={"COLUMNS": "200"})
    assert (
        listed.exit_code == 0
        and "cart_reminder" in listed.output
        and "email/desktop" in listed.output
    )
    out = runner.invoke(
        app, ["content", "render", "cart_reminder", "--profile", "user_id:u1", "--json"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["parts"]["subject"] == "Rui, your cart is waiting" and data["version"] == 1
    push = runner.invoke(
        app,
        ["content", "render", "cart_reminder", "--channel", "push", "--device", "mobile", "--json"],
    )
    assert json.loads(push.output)["parts"]["text"] == "there: cart!"
    coded = runner.invoke(
        app,
        [
            "content",
            "render",
            "cart_reminder",
            "--profile",
            "p1",
            "--set",
            "discount_code=WELCOME5",
            "--json",
        ],
    )
    assert json.loads(coded.output)["parts"]["text"] == "Hi Rui, code WELCOME5"
    (project / "content" / "cart.yaml").write_text(CONTENT.replace("Hi {{", "Hello {{"))
    hist = runner.invoke(app, ["content", "history", "cart_reminder"])
    assert hist.exit_code == 0 and "│ 2 " in hist.output and "│ 1 " in hist.output
    old = runner.invoke(app, ["content", "render", "cart_reminder", "--version", "1", "--json"])
    assert json.loads(old.output)["parts"]["text"] == "Hi there"


def test_bad_template_is_reported_with_line(project: Path) -> None:
    (project / "content" / "cart.yaml").write_text(CONTENT.replace("{% endif %}", ""))
    done = CliRunner().invoke(_app(), ["content", "validate"])
    assert done.exit_code != 0
    assert isinstance(done.exception, DefinitionError)
    problem = done.exception.problems[0]
    assert problem.file is not None and problem.file.endswith("cart.yaml") and problem.line == 10
