"""`microseg predict train|score|list|clv` and `microseg discover` through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import microseg.cli as cli_module
from microseg.cli import discover as discover_cli
from microseg.cli import predict as predict_cli
from microseg.store import Store
from microseg.workspace import Workspace


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    Workspace.init(tmp_path / "proj").close()
    monkeypatch.setitem(cli_module.STATE, "project", tmp_path / "proj")
    monkeypatch.delenv("MICROSEG_PROGRESS", raising=False)
    return tmp_path / "proj"


@pytest.fixture
def app() -> typer.Typer:
    a = typer.Typer()
    predict_cli.register(a)
    discover_cli.register(a)
    return a


def features_csv(path: Path, n: int = 1200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "profile_id": [f"u{i}" for i in range(n)],
            "recency_days": np.r_[rng.normal(10, 2, n // 2), rng.normal(200, 20, n - n // 2)],
            "frequency": np.r_[rng.normal(12, 2, n // 2), rng.normal(2, 0.5, n - n // 2)],
            "monetary": np.r_[rng.normal(900, 100, n // 2), rng.normal(80, 10, n - n // 2)],
        }
    )
    logit = -1 + 0.2 * frame["frequency"] - 0.01 * frame["recency_days"]
    frame["bought"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame.to_csv(path, index=False)
    return path


def store_of(project: Path) -> Store:
    return Store(next(project.rglob("*.duckdb")), read_only=True)


def test_train_score_list(project: Path, app: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    csv = features_csv(tmp_path / "features.csv")
    result = runner.invoke(
        app,
        [
            "predict",
            "train",
            "buy30",
            "--target",
            "bought",
            "--features",
            str(csv),
            "--algorithm",
            "logistic",
            "--cv",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "buy30 v1: ROC-AUC" in result.output
        and "CV ROC-AUC" in result.output
        and "top 10% threshold" in result.output
    )
    out = tmp_path / "scores.csv"
    scored = runner.invoke(
        app, ["predict", "score", "buy30", "--features", str(csv), "--out", str(out)]
    )
    assert scored.exit_code == 0, scored.output
    assert "scored 1,200 profiles with buy30 v1" in scored.output
    assert len(pd.read_csv(out)) == 1200
    listed = runner.invoke(app, ["predict", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(r["model"], r["version"], r["kind"]) for r in rows] == [
        ("buy30", 1, "propensity/logistic")
    ]
    assert runner.invoke(app, ["predict", "list"]).exit_code == 0
    s = store_of(project)
    try:
        assert s.scalar("SELECT count(*) FROM scores WHERE model = 'buy30' AND version = 1") == 1200
    finally:
        s.close()


def test_train_refuses_thin_data(project: Path, app: typer.Typer, tmp_path: Path) -> None:
    csv = features_csv(tmp_path / "f.csv", n=150)
    result = CliRunner().invoke(
        app, ["predict", "train", "m", "--target", "bought", "--features", str(csv)]
    )
    assert result.exit_code != 0
    assert "guardrail" in result.output


def test_discover_with_plot_and_saved_run(project: Path, app: typer.Typer, tmp_path: Path) -> None:
    csv = features_csv(tmp_path / "features.csv")
    result = CliRunner().invoke(
        app,
        [
            "discover",
            "--features",
            str(csv),
            "--traits",
            "recency_days,frequency,monetary",
            "--k-max",
            "5",
            "--bootstrap",
            "2",
            "--plot",
            str(tmp_path / "plots" / "rfm"),
            "--save-run",
            "rfm",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "kmeans with 2 clusters on 1,200 profiles" in result.output
    assert "stability: mean adjusted Rand" in result.output
    assert "Recent" in result.output and "Lapsed" in result.output
    assert (tmp_path / "plots" / "rfm.png").exists() and (tmp_path / "plots" / "rfm.html").exists()
    s = store_of(project)
    try:
        assert s.scalar("SELECT count(*) FROM cluster_membership WHERE run = 'rfm'") == 1200
    finally:
        s.close()
    unknown = CliRunner().invoke(app, ["discover", "--features", str(csv), "--traits", "monetry"])
    assert unknown.exit_code != 0


def test_clv_command_on_cdnow(
    project: Path, app: typer.Typer, tmp_path: Path, data_dir: Path
) -> None:
    path = data_dir / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"CDNOW sample not found at {path}")
    raw = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        names=["m", "profile_id", "date", "n", "value"],
        dtype={"date": str},
    )
    events = pd.DataFrame(
        {
            "profile_id": raw["profile_id"],
            "ts": pd.to_datetime(raw["date"], format="%Y%m%d"),
            "value": raw["value"],
        }
    )
    events.to_csv(tmp_path / "cdnow.csv", index=False)
    result = CliRunner().invoke(
        app, ["predict", "clv", str(tmp_path / "cdnow.csv"), "--as-of", "1997-10-01"]
    )
    assert result.exit_code == 0, result.output
    assert "r=0.243, alpha=4.414, a=0.793, b=2.425" in result.output or "r=0.243" in result.output
    assert "2,357 profiles" in result.output


def test_train_on_events_with_temporal_split_then_score_point_in_time(
    project: Path, app: typer.Typer, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    rows = []
    start = pd.Timestamp("2024-01-01")
    for i in range(800):
        rate = rng.gamma(1.0, 0.04)
        t = rng.exponential(40)
        while t < 300:
            rows.append((f"u{i}", start + pd.Timedelta(days=float(t)), float(rng.gamma(2, 20))))
            t += rng.exponential(1 / rate)
    path = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["profile_id", "ts", "value"]).to_csv(path, index=False)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "predict",
            "train-events",
            "buy",
            str(path),
            "--algorithm",
            "logistic",
            "--train-as-of",
            "2024-04-01,2024-05-01,2024-06-01",
            "--valid-as-of",
            "2024-07-01",
            "--test-as-of",
            "2024-08-01",
            "--allow-small",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (
        "buy v1 (purchase in 30 d): test ROC-AUC" in result.output
        and "best F1 on validation" in result.output
    )
    leaky = runner.invoke(
        app,
        [
            "predict",
            "train-events",
            "buy",
            str(path),
            "--train-as-of",
            "2024-06-15",
            "--valid-as-of",
            "2024-07-01",
            "--test-as-of",
            "2024-08-01",
        ],
    )
    assert leaky.exit_code != 0 and "leakage" in leaky.output
    scored = runner.invoke(
        app, ["predict", "score", "buy", "--events", str(path), "--as-of", "2024-09-01"]
    )
    assert scored.exit_code == 0, scored.output
    assert "with buy v1" in scored.output
