# ruff: noqa: F811 - the spark fixture imported from engines_support is redefined as argument
"""`microseg spark run`: the project's definitions on Spark, Parquet events in, Parquet out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer
import yaml
from engines_support import (  # noqa: F401 - pytest fixture
    AS_OF,
    SEGMENTS,
    parity_segments,
    parity_store,
    spark,
)
from typer.testing import CliRunner

from microseg.cli import spark as spark_cli
from microseg.errors import ConfigError
from microseg.segments import compute_segments
from microseg.segments.membership import members
from microseg.traits import compute_traits, load_traits, trait_frame

pytestmark = pytest.mark.spark
CHOSEN = ("t_contains_list", "seq_drop", "g_store", "bucket")
# the traits these segments read (a lighter set than the full parity suite's)
CLI_TRAITS = """
traits:
  - {name: n_events, kind: count}
  - name: interests
    kind: interest_tags
    min_count: 2
    cap: 2
    rules:
      - {tag: Electronics > Phones, events: [product_view], where: {category: {matches: phone}}}
      - {tag: Home > Kitchen, where: {category: kitchen}}
  - {name: latitude, kind: attribute, attribute: latitude, dtype: number}
  - {name: longitude, kind: attribute, attribute: longitude, dtype: number}
"""


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A project whose traits.yaml/segments are the parity definitions (+ DuckDB results)."""
    from microseg.cli import STATE
    from microseg.config.project import Project

    project = Project.init(tmp_path / "proj", "proj")
    (project.root / "traits.yaml").write_text(CLI_TRAITS)
    for old in (project.root / "segments").glob("*.yaml"):
        old.unlink()
    wanted = set(CHOSEN)
    for d in SEGMENTS:
        if d["name"] in wanted:
            (project.root / "segments" / f"{d['name']}.yaml").write_text(yaml.safe_dump(d))
    store = parity_store(project.settings, path=project.store_path)
    events = tmp_path / "events.parquet"
    store.df("SELECT * FROM events ORDER BY event_id").to_parquet(events)
    traitset = load_traits(CLI_TRAITS, project.settings.taxonomy)
    compute_traits(store, project.settings, traitset, AS_OF)
    segs = {n: s for n, s in parity_segments().items() if n in wanted}
    compute_segments(store, project.settings, segs, AS_OF)
    expected = {
        "traits": trait_frame(store),
        "members": {n: members(store, n) for n in segs},
        "events": events,
    }
    store.close()
    monkeypatch.setitem(STATE, "project", project.root)
    return expected


def test_spark_run_writes_traits_and_memberships(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    expected = _project(tmp_path, monkeypatch)
    app = typer.Typer()
    spark_cli.register(app)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        [
            "spark",
            "run",
            "--events",
            str(expected["events"]),
            "--as-of",
            AS_OF.isoformat(),
            "--out",
            str(out),
            "--no-codegen",
        ],
    )
    assert res.exit_code == 0, res.output
    assert f"{len(expected['members'])} segments" in res.output
    for name in expected["members"]:
        assert name in res.output
    memberships = pd.read_parquet(out / "memberships")
    got = {n: set(g["profile_id"]) for n, g in memberships.groupby("segment")}
    assert {n: got.get(n, set()) for n in expected["members"]} == expected["members"]
    traits = pd.read_parquet(out / "traits").sort_values("profile_id", ignore_index=True)
    assert list(traits.columns) == list(expected["traits"].columns)
    assert list(traits["profile_id"]) == list(expected["traits"]["profile_id"])
    assert (traits["n_events"].to_numpy() == expected["traits"]["n_events"].to_numpy()).all()


def test_spark_run_saves_memberships_to_the_store(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--save writes Spark's memberships like `segments compute`: diff, history, sizes."""
    from microseg.config.project import Project
    from microseg.store import Store

    expected = _project(tmp_path, monkeypatch)
    db = Project.load(tmp_path / "proj").store_path
    store = Store(db)
    store.execute("DELETE FROM memberships")
    store.execute("DELETE FROM membership_history")
    store.close()
    app = typer.Typer()
    spark_cli.register(app)
    args = ["spark", "run", "--events", str(expected["events"]), "--as-of", AS_OF.isoformat()]
    args += ["--out", str(tmp_path / "out"), "--no-codegen", "--save"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    total = sum(len(m) for m in expected["members"].values())
    assert f"{len(expected['members'])} segments, {total:,} entered/exited" in res.output
    store = Store(db)
    for name, want in expected["members"].items():
        assert members(store, name) == want
        assert store.scalar("SELECT size FROM segments WHERE name = ?", [name]) == len(want)
    entered = store.rows(
        "SELECT segment, count(*) FROM membership_history WHERE change = 'entered'"
        " AND changed_at = ? GROUP BY 1",
        [AS_OF],
    )
    assert dict(entered) == {n: len(m) for n, m in expected["members"].items() if m}
    store.close()
    res = CliRunner().invoke(app, args)  # the same run again changes nothing
    assert res.exit_code == 0 and ", 0 entered/exited" in res.output


def test_spark_run_user_mistakes(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path, monkeypatch)
    app = typer.Typer()
    spark_cli.register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["spark", "run", "--as-of", "yesterday"])
    assert res.exit_code == 2 and "--as-of expects an ISO time" in res.output
    missing = str(tmp_path / "nope" / "*.parquet")
    res = runner.invoke(
        app, ["spark", "run", "--events", missing, "--as-of", AS_OF.isoformat(), "--no-codegen"]
    )
    assert res.exit_code == 1
    assert isinstance(res.exception, Exception) and "cannot read events" in str(res.exception)


def test_event_files_without_some_properties(spark: Any, tmp_path: Path) -> None:
    """Declared properties absent from the Parquet files become typed NULL columns."""
    from engines_support import settings

    from microseg.engines.spark import SparkEngine

    frame = pd.DataFrame(
        {
            "event_type": ["purchase"],
            "ts": [pd.Timestamp(AS_OF)],
            "id_key": ["user_id:x"],
            "price": [3.5],
        }
    )
    frame.to_parquet(tmp_path / "part-1.parquet")
    engine = SparkEngine(spark, settings(), tmp_path / "work")
    engine.load_events(str(tmp_path / "part-*.parquet"))
    engine.ensure_event_columns()
    schema = {f.name: f.dataType.simpleString() for f in spark.table("events").schema.fields}
    assert schema["price"] == "double" and schema["quantity"] == "double"
    assert schema["category"] == "string" and schema["ts"] == "timestamp"
    assert schema["session_id"] == "string" and schema["event_id"] == "string"
    row = spark.table("events").collect()[0]
    assert row["quantity"] is None and row["ts"] == AS_OF
    with pytest.raises(ConfigError, match="lack the columns"):
        pd.DataFrame({"event_type": ["x"]}).to_parquet(tmp_path / "bad.parquet")
        engine.load_events(str(tmp_path / "bad.parquet"))
