"""CLI: experiment plan / analyze / assign and attribution, via CliRunner on a fresh app."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import typer
from rich.console import Console
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize
from typer.testing import CliRunner

from microseg.cli import experiments as cli_mod
from microseg.cli.experiments import register

runner = CliRunner()


@pytest.fixture()
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    # a wide console so table cells are not folded at the runner's default 80 columns
    monkeypatch.setattr(cli_mod, "console", Console(width=250))
    a = typer.Typer()
    register(a)
    return a


def test_plan_prints_statsmodels_sample_size(app: typer.Typer) -> None:
    res = runner.invoke(app, ["experiment", "plan", "--baseline", "0.05", "--mde", "0.01"])
    assert res.exit_code == 0, res.output
    n = math.ceil(
        NormalIndPower().solve_power(proportion_effectsize(0.06, 0.05), alpha=0.05, power=0.8)
    )
    assert f"control {n:,}" in res.output


def test_plan_segments_warns_small(app: typer.Typer, tmp_path: Path) -> None:
    seg = tmp_path / "seg.csv"
    pd.DataFrame(
        {"segment": ["big", "tiny"], "size": [200_000, 300], "baseline": [0.05, 0.05]}
    ).to_csv(seg, index=False)
    res = runner.invoke(
        app,
        [
            "experiment",
            "plan",
            "--baseline",
            "0.05",
            "--mde",
            "0.1",
            "--relative",
            "--segments",
            str(seg),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "too small to test" in res.output and "1 segment(s) too small" in res.output


def test_analyze_with_plot_and_csv(app: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "exp.csv"
    pd.DataFrame(
        {
            "variant": ["generic", "tailored"],
            "n": [10000, 10000],
            "conversions": [500, 620],
            "revenue_sum": [5000.0, 6100.0],
            "revenue_sum_sq": [200000.0, 250000.0],
        }
    ).to_csv(f, index=False)
    png, out = tmp_path / "lift.png", tmp_path / "res.csv"
    res = runner.invoke(
        app, ["experiment", "analyze", str(f), "--plot", str(png), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "better" in res.output and "sample ratio: ok" in res.output
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 2000
    table = pd.read_csv(out)
    assert set(table["metric"]) == {"conversion", "revenue"}


def test_analyze_errors_are_one_line(app: typer.Typer, tmp_path: Path) -> None:
    res = runner.invoke(app, ["experiment", "analyze", str(tmp_path / "missing.csv")])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0
    assert res.output.startswith("Error: file not found")
    bad = tmp_path / "bad.csv"
    bad.write_text("variant,users,conversions\na,10,1\n")
    res = runner.invoke(app, ["experiment", "analyze", str(bad)])
    assert res.exit_code == 1 and "missing column(s) ['n']" in res.output
    res = runner.invoke(app, ["experiment", "plan", "--baseline", "1.5", "--mde", "0.1"])
    assert res.exit_code == 1 and res.output.startswith("Error:")


def test_assign(app: typer.Typer, tmp_path: Path) -> None:
    spec = tmp_path / "e.yaml"
    spec.write_text(
        "key: tailoring\nvariants:\n  - name: generic\n  - name: tailored\nholdout: 0.1\n"
    )
    profiles = tmp_path / "p.csv"
    pd.DataFrame({"profile_id": [f"u{i}" for i in range(2000)]}).to_csv(profiles, index=False)
    out = tmp_path / "a.csv"
    res = runner.invoke(app, ["experiment", "assign", str(spec), str(profiles), "--out", str(out)])
    assert res.exit_code == 0, res.output
    a = pd.read_csv(out)
    assert set(a["variant"]) == {"generic", "tailored", "holdout"}
    again = tmp_path / "b.csv"
    runner.invoke(app, ["experiment", "assign", str(spec), str(profiles), "--out", str(again)])
    assert a.equals(pd.read_csv(again))


def test_attribution_command(app: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "journey_id": ["j1", "j1", "j2", "j3"],
            "ts": ["2024-01-01", "2024-01-08", "2024-01-01", "2024-01-04"],
            "channel": ["A", "B", "A", "B"],
            "converted": [0, 1, 0, 1],
        }
    ).to_csv(f, index=False)
    png = tmp_path / "a.png"
    res = runner.invoke(app, ["attribution", str(f), "--model", "markov", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    assert "removal_effect" in res.output and png.exists()
    res = runner.invoke(app, ["attribution", str(f), "--model", "all"])
    assert res.exit_code == 0 and "time_decay" in res.output
    res = runner.invoke(app, ["attribution", str(f), "--model", "shapley"])
    assert res.exit_code == 1 and res.output.startswith("Error: unknown attribution model")


def test_effects_command_by_quantile(app: typer.Typer, tmp_path: Path) -> None:
    f = tmp_path / "users.csv"
    pd.DataFrame(
        {
            "arm": ["c", "t"] * 50,
            "visit": [0, 1] * 40 + [0, 0] * 10,
            "history": list(range(100)),
        }
    ).to_csv(f, index=False)
    out = tmp_path / "eff.csv"
    res = runner.invoke(
        app,
        [
            "experiment",
            "effects",
            str(f),
            "--arm-col",
            "arm",
            "--control",
            "c",
            "--outcome",
            "visit",
            "--by",
            "history",
            "--quantiles",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out)
    assert len(table) == 2 and table["ate"].iloc[0] == pytest.approx(1.0)
    res = runner.invoke(
        app,
        [
            "experiment",
            "effects",
            str(f),
            "--arm-col",
            "armm",
            "--control",
            "c",
            "--outcome",
            "visit",
        ],
    )
    assert res.exit_code == 1 and "did you mean 'arm'" in res.output


OBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "open_bandit_dataset_sample"


@pytest.mark.skipif(not OBD.exists(), reason=f"Open Bandit Dataset sample not found at {OBD}")
def test_ope_command(app: typer.Typer) -> None:
    res = runner.invoke(app, ["experiment", "ope", str(OBD), "--campaign", "men"])
    assert res.exit_code == 0, res.output
    assert "SNIPW" in res.output and "on-policy" in res.output
    res = runner.invoke(app, ["experiment", "ope", str(OBD), "--campaign", "kids"])
    assert res.exit_code == 1 and "not found" in res.output


def test_plot_qini_png(tmp_path: Path) -> None:
    import numpy as np

    from microseg.experiments.plots import plot_qini
    from microseg.experiments.uplift import qini_curve

    rng = np.random.default_rng(0)
    t = rng.random(2000) < 0.5
    score = rng.random(2000)
    y = (rng.random(2000) < 0.1 + 0.2 * t * (score > 0.5)).astype(int)
    out = tmp_path / "qini.png"
    plot_qini(qini_curve(score, t, y)).savefig(out)
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 2000
