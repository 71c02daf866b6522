"""Golden members of the example segments, history, min-size guard, overlap, explain, CLI."""

from __future__ import annotations

from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer
from segments_support import AS_OF, ago, build_store
from typer.testing import CliRunner

from microseg.segments import (
    apply_changes,
    compute_segments,
    explain,
    history,
    overlap,
    parse_segment,
    sizes,
)
from microseg.segments.evaluate import bucket_of
from microseg.segments.membership import members
from microseg.segments.parse import load_segments
from microseg.segments.realtime import MembershipChange

TEMPLATES = Path(str(resources.files("microseg.config") / "templates" / "segments"))
EXPECTED = {
    "frequent_mobile_shoppers": {"p1"},
    "repeat_product_viewers": {"p2"},
    "cart_abandoners_24h": {"p3", "p5"},
    "quick_cart_abandoners": {"p3", "p4", "p5"},
    "resource_engagers": {"p9"},
    "high_margin_browsers": {"p8"},
    "nearby_store_shoppers": {"p6"},
    "nyc_postal_codes": {"p1", "p3", "p6", "p8"},
    "top_spenders": {"p2"},
    "above_median_spenders": {"p1", "p2", "p6", "p7"},
    "churn_risk": {"p2"},
    "email_reachable": {"p1", "p5", "p9"},
    "vip_campaign_audience": {"p1"},
}


def all_templates() -> dict[str, Any]:
    return load_segments(sorted(TEMPLATES.glob("*.yaml")))[0]


def test_example_segments_golden_members(store: Any, settings: Any) -> None:
    segs = all_templates()
    report = compute_segments(store, settings, segs, AS_OF)
    assert {r.status for r in report.runs} == {"ok"}
    for name, expected in EXPECTED.items():
        assert members(store, name) == expected, name
    holdout = {f"p{i}" for i in range(1, 11) if bucket_of(f"p{i}", "holdout-2024", 100) < 10}
    assert members(store, "holdout") == holdout


def test_history_records_entries_and_exits(store: Any, settings: Any) -> None:
    seg = parse_segment({"name": "recent_buyers", "rule": {"event": "purchase", "last": "7d"}})
    compute_segments(store, settings, [seg], AS_OF)
    assert members(store, "recent_buyers") == {"p1", "p4"}
    later = AS_OF + timedelta(days=4, hours=1)  # p1 bought 3 days ago, p4 2 days ago
    r = compute_segments(store, settings, [seg], later)
    assert (r.runs[0].entered, r.runs[0].exited) == (0, 1)
    h = history(store, "recent_buyers")
    assert list(h["change"]) == ["exited", "entered", "entered"]
    assert h.iloc[0]["profile_id"] == "p1" and h.iloc[0]["changed_at"] == later
    assert "no longer matches" in h.iloc[0]["reason"]


def test_min_size_guard_warns_or_refuses(store: Any, settings: Any) -> None:
    seg = parse_segment({"name": "tiny", "rule": {"trait": "age", "gte": 60}})
    r = compute_segments(store, settings, [seg], AS_OF, min_size=3)
    assert r.runs[0].status == "too_small_warned" and "below the minimum of 3" in r.warnings[0]
    assert members(store, "tiny") == {"p10"}
    seg2 = parse_segment({"name": "tiny2", "min_size": 2, "rule": {"trait": "age", "gte": 60}})
    r = compute_segments(store, settings, [seg2], AS_OF, on_small="refuse")
    assert r.runs[0].status == "too_small_refused" and members(store, "tiny2") == set()


def test_overlap_and_sizes(store: Any, settings: Any) -> None:
    segs = {
        n: s
        for n, s in all_templates().items()
        if n in ("nyc_postal_codes", "above_median_spenders", "email_reachable")
    }
    compute_segments(store, settings, segs, AS_OF)
    df = overlap(store)
    row = df[(df.segment_a == "above_median_spenders") & (df.segment_b == "nyc_postal_codes")].iloc[
        0
    ]
    # {p1,p2,p6,p7} vs {p1,p3,p6,p8}: both = 2, union = 6
    assert (row["both"], round(row["jaccard"], 4)) == (2, round(2 / 6, 4))
    assert dict(zip(sizes(store).segment, sizes(store)["size"], strict=True)) == {
        "above_median_spenders": 4,
        "email_reachable": 3,
        "nyc_postal_codes": 4,
    }


def test_explain_shows_values_and_agrees_with_batch(store: Any, settings: Any) -> None:
    segs = all_templates()
    compute_segments(store, settings, segs, AS_OF)
    ex = explain(store, segs["frequent_mobile_shoppers"], "p4", AS_OF, settings=settings)
    assert ex.member is False and ex.stored_member is False
    leaves = ex.tree.leaves()
    assert leaves["rule.all[1]"].value == 25 and leaves["rule.all[1]"].passed
    assert leaves["rule.all[3]"].value == 1 and not leaves["rule.all[3]"].passed  # 1 purchase
    assert any("FAIL" in line and "purchase" in line for line in ex.lines())
    for name, seg in segs.items():
        for pid in [f"p{i}" for i in range(1, 11)]:
            e = explain(store, seg, pid, AS_OF, settings=settings)
            assert e.member == (pid in members(store, name)) == e.stored_member, (name, pid)


def test_apply_realtime_changes(store: Any) -> None:
    apply_changes(
        store,
        [
            MembershipChange("rt", "p1", "entered", ago(hours=1), "rule -> true"),
            MembershipChange("rt", "p2", "entered", ago(hours=1), "rule -> true"),
            MembershipChange("rt", "p1", "exited", AS_OF, "rule -> false"),
        ],
    )
    assert members(store, "rt") == {"p2"}
    assert list(history(store, "rt", "p1")["source"]) == ["realtime", "realtime"]


def test_cli_commands(tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from microseg.cli import STATE
    from microseg.cli import segments as seg_cli
    from microseg.config.project import Project
    from microseg.store import Store

    monkeypatch.setenv("COLUMNS", "250")
    project = Project.init(tmp_path / "proj", "proj")
    assert (project.root / "segments" / "cart_abandoners_24h.yaml").exists()
    app = typer.Typer()
    seg_cli.register(app)
    runner = CliRunner()
    monkeypatch.setitem(STATE, "project", project.root)
    res = runner.invoke(app, ["segments", "validate"])
    assert res.exit_code == 0, res.output
    assert f"{len(list(TEMPLATES.glob('*.yaml')))} segment files valid" in res.output
    # fill the project's store with the fixed data, keeping only segments its traits support
    from segments_support import fixed_consents, fixed_events, fixed_scores, fixed_traits

    Store(project.store_path).close()  # create the project store with its migrations
    seed = build_store(settings, fixed_events(), fixed_traits(), fixed_consents(), fixed_scores())
    seed.execute(f"ATTACH '{project.store_path}' AS disk")
    disk_cols = [
        r[0]
        for r in seed.rows(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = 'disk' AND table_name = 'events'"
        )
    ]
    for col in [c for c in seed.columns("events") if c not in disk_cols]:
        seed.execute(f"ALTER TABLE disk.events ADD COLUMN {col} {seed.columns('events')[col]}")
    seed.execute("INSERT INTO disk.events BY NAME SELECT * FROM events")
    for t in ("profiles", "identities", "consents", "scores"):
        seed.execute(f"INSERT INTO disk.{t} SELECT * FROM {t}")
    seed.execute("CREATE TABLE disk.traits AS SELECT * FROM traits")
    seed.close()
    res = runner.invoke(
        app, ["segments", "compute", "--as-of", AS_OF.isoformat(), "--min-size", "2"]
    )
    assert res.exit_code == 0, res.output
    assert "14 segments" in res.output and "below the minimum of 2" in res.output
    res = runner.invoke(
        app, ["segments", "compute", "vip_campaign_audience", "--as-of", AS_OF.isoformat()]
    )
    assert res.exit_code == 0 and "4 segments" in res.output, res.output  # + the 3 it references
    res = runner.invoke(app, ["segments", "list"])
    assert "cart_abandoners_24h" in res.output
    res = runner.invoke(
        app, ["segments", "explain", "cart_abandoners_24h", "p3", "--as-of", AS_OF.isoformat()]
    )
    assert res.exit_code == 0 and "p3 IS in cart_abandoners_24h" in res.output, res.output
    res = runner.invoke(app, ["segments", "history", "cart_abandoners_24h"])
    assert "entered" in res.output
    res = runner.invoke(
        app, ["segments", "overlap", "cart_abandoners_24h", "quick_cart_abandoners"]
    )
    assert "0.6667" in res.output, res.output
    res = runner.invoke(
        app,
        [
            "segments",
            "preview",
            str(project.root / "segments" / "top_spenders.yaml"),
            "--as-of",
            AS_OF.isoformat(),
            "--sql",
        ],
    )
    assert res.exit_code == 0 and "1 of 10 profiles" in res.output and "batch only" in res.output


def test_reference_to_refused_segment_is_inlined(store: Any, settings: Any) -> None:
    small = parse_segment({"name": "small", "min_size": 50, "rule": {"trait": "age", "lt": 30}})
    ref = parse_segment({"name": "ref", "rule": {"segment": "small"}})
    r = compute_segments(store, settings, [ref, small], AS_OF, on_small="refuse")
    assert [x.name for x in r.runs] == ["small", "ref"]  # dependency order
    assert members(store, "small") == set()  # refused, nothing written
    assert members(store, "ref") == {"p1", "p4", "p9"}  # evaluated from the definition
