"""Timeliness judges live data: a back-filled history file is counted, not called late."""

from __future__ import annotations

from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from microseg.config.models import ProjectSettings
from microseg.ingest.pipeline import import_events
from microseg.ingest.quality import Thresholds, quality_report
from microseg.workspace import Workspace

HEADER = "event_id,event_type,timestamp,user_id,product_id,price"


def settings() -> ProjectSettings:
    raw = yaml.safe_load(files("microseg.config.templates").joinpath("microseg.yaml").read_text())
    return ProjectSettings.model_validate(raw)


def load(ws: Workspace, path: Path, rows: list[tuple[str, datetime]], now: datetime) -> None:
    lines = [f"{eid},page_view,{ts},u1,," for eid, ts in rows]
    path.write_text(HEADER + "\n" + "\n".join(lines) + "\n")
    import_events(ws.store, ws.settings, ws.keys, path, source_name=path.name, now=now)


def test_backfilled_sources_are_counted_but_not_judged(tmp_path: Path) -> None:
    t0 = datetime(2024, 5, 1, 12)
    with Workspace.ephemeral(settings()) as ws:
        # history: a year of events imported on one day (median lag months) -> back-fill
        history = [(f"h{i}", t0 - timedelta(days=365 - i)) for i in range(300)]
        load(ws, tmp_path / "history.csv", history, now=t0)
        # live feed: 10 events received 2 minutes after they happened, 2 received 3 h late
        for i in range(10):
            ts = t0 + timedelta(minutes=10 * i)
            load(ws, tmp_path / f"live{i}.csv", [(f"l{i}", ts)], now=ts + timedelta(minutes=2))
        for i in range(2):
            ts = t0 + timedelta(hours=2, minutes=i)
            load(ws, tmp_path / f"late{i}.csv", [(f"x{i}", ts)], now=ts + timedelta(hours=3))
        r = quality_report(ws.store, ws.settings, as_of=t0 + timedelta(days=1))
        late = r.metric("timeliness", "late_share")
        assert late.value == pytest.approx(2 / 12)  # judged on the 12 live events only
        assert late.status == "warn"
        assert r.metric("timeliness", "lag_max_minutes").value == pytest.approx(180.0)
        back = r.metric("timeliness", "backfilled_share")
        assert back.value == pytest.approx(300 / 312)
        assert back.detail.startswith("300 events from 1 back-filled sources")
        # with a 1-minute back-fill threshold every source is a back-fill: nothing to judge
        r = quality_report(ws.store, ws.settings, thresholds=Thresholds(backfill_days=1 / 1440))
        assert r.metric("timeliness", "late_share").status == "info"
        assert r.metric("timeliness", "late_share").detail == "no live events"
