"""A fresh `microseg init` project computes every example segment on its default traits."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from microseg.segments import load_segment, preview
from microseg.synth import generate_events
from microseg.workspace import Workspace

AS_OF = datetime(2024, 3, 31)


def test_example_segments_compute_on_a_fresh_project(tmp_path: Path) -> None:
    events = tmp_path / "events.parquet"
    generate_events(events, 5_000, 300, seed=2)
    with Workspace.init(tmp_path / "proj", "fresh") as ws:
        ws.import_events(events)
        ws.compute_traits(AS_OF)
        report = ws.compute_segments(AS_OF)
        computed = {run.name for run in report.runs}
        assert computed == {p.stem for p in (ws.project.root / "segments").glob("*.yaml")}
        sizes = dict(ws.store.rows("SELECT segment, count(*) FROM memberships GROUP BY 1"))
        assert sizes["top_spenders"] > 0 and sizes["above_median_spenders"] > sizes["top_spenders"]
        # a model that has not been scored yet: accepted, empty, and said so
        churn = preview(ws, load_segment(ws.project.root / "segments" / "churn_risk.yaml"), AS_OF)
        assert churn.size == 0 and any("no scores stored yet" in w for w in churn.warnings)


def test_property_filters_work_before_any_import_carried_the_property(tmp_path: Path) -> None:
    """A declared property no import has carried yet has no events column: batch SQL and the
    real-time bootstrap read it as NULL instead of failing with a binder error."""
    from datetime import timedelta

    from microseg.segments import RealtimeEvaluator, compute_segments, parse_segment
    from microseg.store import utcnow

    root = tmp_path / "fresh"
    Workspace.init(root, "fresh").close()
    with Workspace.open(root) as ws:
        assert "price" not in ws.store.columns("events")
        seg = parse_segment(
            {
                "name": "pricey_cart",
                "rule": {"event": "add_to_cart", "where": {"price": {"gte": 50}}, "last": "2h"},
            }
        )
        report = compute_segments(ws.store, ws.settings, [seg])
        assert [(r.name, r.size, r.status) for r in report.runs] == [("pricey_cart", 0, "ok")]
        rt = RealtimeEvaluator.from_store(
            ws.store, ws.settings, [seg], start=utcnow() - timedelta(minutes=1), history=True
        )
        assert rt.members_of("pricey_cart") == set()
