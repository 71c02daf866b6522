"""`microseg recommend show | evaluate` through Typer's CliRunner on a real project folder."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import typer
from test_recommend_core import FIELDS, _row, planted_events
from typer.testing import CliRunner

from microseg.cli import STATE
from microseg.cli.recommend import register
from microseg.config.project import Project
from microseg.config.sources import SourceSpec
from microseg.errors import ConfigError, MicrosegError, NotFoundError
from microseg.workspace import Workspace

WIDE = {"COLUMNS": "220"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rec") / "proj"
    Project.init(root, "shop")
    df = planted_events(80, seed=3)
    cart = pd.DataFrame([_row("u1", datetime(2024, 6, 30), "Y2", "add_to_cart")])
    df = pd.concat([df, cart], ignore_index=True)
    csv = root / "events.csv"
    df.drop(columns="product_name").to_csv(csv, index=False)
    fields = {k: v for k, v in FIELDS.items() if k != "product_name"}
    with Workspace.open(root) as ws:
        result = ws.import_events(csv, spec=SourceSpec.model_validate({"fields": fields}))
        assert result.inserted == len(df)
        ws.resolve_identities()
    return root


@pytest.fixture()
def app(project: Path, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setitem(STATE, "project", project)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    register(app)
    return app


def test_show_lists_recommendations_with_reasons(app: typer.Typer) -> None:
    runner = CliRunner()
    out = runner.invoke(
        app, ["recommend", "show", "u1", "-k", "3", "--as-of", "2024-07-01"], env=WIDE
    )
    assert out.exit_code == 0, out.output
    assert "left in cart" in out.output and "Y2" in out.output
    lines = [ln for ln in out.output.splitlines() if "│" in ln and "rank" not in ln]
    assert len(lines) == 3
    pop = runner.invoke(
        app,
        ["recommend", "show", "user_id:u1", "-s", "popularity", "--as-of", "2024-07-01"],
        env=WIDE,
    )
    assert pop.exit_code == 0 and "popular" in pop.output


def test_evaluate_prints_tables_and_writes_the_chart(app: typer.Typer, tmp_path: Path) -> None:
    png = tmp_path / "recall.png"
    out = CliRunner().invoke(
        app,
        [
            "recommend", "evaluate", "--cutoff", "2024-04-15", "-k", "5", "-k", "10",
            "-s", "cooccurrence", "-s", "blend", "--reps", "100", "--plot", str(png),
        ],
        env=WIDE,
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    for text in ("new items after 2024-04-15", "all items", "cooccurrence", "popularity"):
        assert text in out.output
    assert "recall@10" in out.output and "test_profiles_new=" in out.output
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["show", "u1", "-s", "coocurence"], ConfigError, "did you mean 'cooccurrence'"),
        (["show", "nobody"], NotFoundError, "no profile for 'nobody'"),
        (["show", "u1", "-k", "0"], ConfigError, "-k must be at least 1"),
        (["show", "u1", "--as-of", "yesterday"], ConfigError, "--as-of must be a date"),
        (["show", "u1", "--item-column", "sku"], ConfigError, "no item column 'sku'"),
        (["show", "u1", "--preset", "shopify"], ConfigError, "unknown --preset 'shopify'"),
        (["evaluate", "--cutoff", "2024-13-01"], ConfigError, "--cutoff must be a date"),
        (["evaluate", "--cutoff", "2020-01-01"], ConfigError, "no purchases before the cutoff"),
        (["evaluate", "--cutoff", "2024-04-15", "--mode", "old"], ConfigError, "unknown --mode"),
        (["evaluate", "--cutoff", "2024-04-15", "-k", "0"], ConfigError, "at least 1"),
        (["evaluate", "--cutoff", "2024-04-15", "--warm", "hot"], ConfigError, "unknown --warm"),
    ],
)
def test_user_mistakes_are_one_line_errors(
    app: typer.Typer, args: list[str], error: type[MicrosegError], message: str
) -> None:
    out = CliRunner().invoke(app, ["recommend", *args])
    assert out.exit_code != 0
    assert isinstance(out.exception, error), out.output
    text = str(out.exception)
    assert message in text and "\n" not in text
