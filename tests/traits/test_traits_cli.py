"""`microseg traits compute | list | show` on a project made from the templates."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from microseg.cli import STATE
from microseg.cli import traits as traits_cli
from microseg.config.project import Project
from microseg.errors import DefinitionError
from microseg.workspace import Workspace

CSV = """event_id,event_type,timestamp,user_id,category,price,quantity,order_id,device
1,purchase,2024-02-20T10:00:00Z,u1,running shoes,50,2,o1,
2,purchase,2024-02-25T11:00:00Z,u1,running shoes,20,1,o2,
3,product_view,2024-02-26T11:30:00Z,u1,running shoes,50,,,mobile
4,product_view,2024-02-27T11:45:00Z,u1,phones,300,,,mobile
5,product_view,2024-02-27T09:00:00Z,u2,kitchen tools,12,,,desktop
6,purchase,2024-03-05T09:00:00Z,u2,kitchen tools,12,1,o3,
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    Project.init(tmp_path / "proj", "demo")
    root = tmp_path / "proj"
    (tmp_path / "events.csv").write_text(CSV)
    with Workspace.open(root) as ws:
        result = ws.import_events(tmp_path / "events.csv")
        assert result.inserted == 6, result
    monkeypatch.setitem(STATE, "project", root)
    return root


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test shell"""

    traits_cli.register(app)
    return app


def test_compute_list_show(project):
    runner = CliRunner()
    app = _app()
    out = runner.invoke(app, ["traits", "compute", "--as-of", "2024-03-01T00:00:00"])
    assert out.exit_code == 0, out.output
    assert "for 2 profiles as of 2024-03-01 00:00:00" in out.output

    out = runner.invoke(app, ["traits", "list"])
    assert out.exit_code == 0, out.output
    assert "rfm_monetary" in out.output and "interest_tags" in out.output

    out = runner.invoke(app, ["traits", "show", "u1", "--json"])
    assert out.exit_code == 0, out.output
    values = json.loads(out.output)
    assert values["orders_30d"] == 2
    assert values["spend_90d"] == pytest.approx(120.0)
    assert values["days_since_purchase"] == 4
    assert values["dominant_device"] == "mobile"
    assert values["last_viewed_category"] == "phones"
    assert values["preferred_hour"] == 11
    assert values["top_category"] == "running shoes"
    assert values["interests"] == ["Sports > Running"]

    out = runner.invoke(app, ["traits", "show", "u2", "--json"])
    values = json.loads(out.output)
    assert values["orders_30d"] == 0  # the purchase is after as_of
    assert values["engagement_label"] in ("Lurker", "Moderately Engaged", "Highly Engaged")


def test_bad_traits_file_is_refused(project):
    (project / "traits.yaml").write_text("traits:\n  - {name: x, kind: count, events: [purchse]}\n")
    result = CliRunner().invoke(_app(), ["traits", "compute"])
    assert isinstance(result.exception, DefinitionError)
    assert "traits.yaml:2" in str(result.exception)
    assert "did you mean 'purchase'" in str(result.exception)


def test_bad_as_of(project):
    result = CliRunner().invoke(_app(), ["traits", "compute", "--as-of", "yesterday"])
    assert result.exit_code != 0
    assert "--as-of" in result.output
