"""`microseg bench` end to end on a small size: every step runs, pandas agrees, JSON is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from microseg.bench import BenchOptions, run_bench
from microseg.bench.bandwidth import floor_seconds, read_bandwidth
from microseg.bench.runner import rows
from microseg.cli.bench import _size, register
from microseg.errors import ConfigError


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("bench")
    options = BenchOptions(
        sizes=[20_000], workdir=work, realtime_events=500, decide_seconds=1.0, connections=4
    )
    return run_bench(options)


def test_every_step_runs_and_agrees_with_pandas(report: dict) -> None:
    run = report["runs"][0]
    steps = run["steps"]
    assert list(steps) == ["import", "traits", "segments", "realtime", "decide"]
    assert steps["import"]["inserted"] == 20_000 and steps["import"]["quarantined"] == 0
    assert run["profiles"] == 2_000 and 1_900 <= steps["import"]["profiles"] <= 2_000
    # the pandas twins do the same work and must reach the same answers
    assert steps["traits"]["pandas"]["checksum"] == steps["traits"]["checksum"]
    assert steps["segments"]["pandas"]["mismatched"] == {}
    assert steps["segments"]["sizes"] == {
        k: v for k, v in steps["segments"]["pandas"]["sizes"].items() if v
    }
    assert len(steps["segments"]["pandas"]["sizes"]) == 20
    assert steps["realtime"]["events"] == 500 and steps["realtime"]["p99_ms"] > 0
    assert steps["decide"]["requests"] > 0 and steps["decide"]["non2xx"] == 0


def test_ratios_and_floor(report: dict) -> None:
    assert report["bandwidth_gb_s"] > 0.1
    for step in ("import", "traits", "segments"):
        r = report["runs"][0]["steps"][step]
        assert r["x_pandas"] == pytest.approx(r["pandas"]["seconds"] / r["seconds"])
        assert r["seconds"] >= r["floor_seconds"] > 0  # nothing beats streaming the bytes once
        assert r["peak_rss_mb"] > 10
    table = rows(report)
    assert [r["step"] for r in table] == ["import", "traits", "segments", "realtime", "decide"]
    json.dumps(report, default=str)  # JSON-able


def test_bandwidth_floor_is_consistent() -> None:
    bw = read_bandwidth(megabytes=64, repeats=2)
    assert floor_seconds(int(bw), bw) == pytest.approx(1.0)


def test_sizes_parse() -> None:
    assert _size("1M") == 1_000_000 and _size("250k") == 250_000 and _size("1,000") == 1000
    with pytest.raises(typer.BadParameter):
        _size("lots")


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown bench step"):
        BenchOptions(steps=["import", "nope"], workdir=tmp_path).check()
    with pytest.raises(ConfigError, match="starts with the import"):
        BenchOptions(steps=["traits"], workdir=tmp_path).check()
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["bench", "--sizes", "many"])
    assert result.exit_code != 0 and "not a size" in result.output
