"""Data-quality report: completeness, validity, timeliness, duplicates, volume, outliers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.ingest.pipeline import import_events
from microseg.ingest.quality import (
    Thresholds,
    flag_outliers,
    outlier_profiles,
    quality_report,
    volume_anomalies,
)
from microseg.workspace import Workspace

RETAIL = Path("/work/shared/data/online_retail_uci/online_retail.csv.gz")


def template(extra_purchase_props: dict[str, Any] | None = None) -> ProjectSettings:
    raw = yaml.safe_load(files("microseg.config.templates").joinpath("microseg.yaml").read_text())
    if extra_purchase_props:
        raw["taxonomy"]["events"]["purchase"]["properties"].update(extra_purchase_props)
    return ProjectSettings.model_validate(raw)


def load(
    ws: Workspace,
    path: Path,
    lines: list[str],
    now: datetime,
    header: str = "event_id,event_type,timestamp,user_id,product_id,price",
) -> None:
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    import_events(ws.store, ws.settings, ws.keys, path, source_name=path.name, now=now)


@pytest.fixture()
def small(tmp_path: Path) -> Workspace:
    """10 product views (2 without product_id), 1 quarantined row, 1 import duplicate,
    1 exact-content duplicate, 3 events received 5 h late."""
    ws = Workspace.ephemeral(template())
    t0 = datetime(2024, 5, 1, 10)
    lines = [
        f"v{i},product_view,{t0 + timedelta(minutes=i)},u{i % 3},{'p' + str(i) if i >= 2 else ''},5"
        for i in range(10)
    ]
    lines.append("v9,product_view,2024-05-01 10:20:00,u1,p9,5")  # same id as v9: skipped at import
    lines.append("copy,product_view,2024-05-01 10:05:00,u2,p5,5")  # same content as v5
    lines.append("bad,product_view,2024-05-01 10:00:00,u1,p1,cheap")  # quarantined: invalid_type
    load(ws, tmp_path / "a.csv", lines, now=datetime(2024, 5, 1, 10, 30))
    late = [f"l{i},page_view,2024-05-01 0{i}:00:00,u0,," for i in range(3)]
    load(ws, tmp_path / "b.csv", late, now=datetime(2024, 5, 1, 8, 0) + timedelta(hours=3))
    yield ws
    ws.close()


def test_sections_on_a_small_store(small: Workspace) -> None:
    r = quality_report(small.store, small.settings)
    assert r.events == 14
    assert r.as_of == datetime(2024, 5, 1, 10, 9)
    m = r.metric("completeness", "product_view.product_id")
    assert m.value == pytest.approx(9 / 11) and m.status == "warn"  # 80 % <= share < 95 %
    assert r.metric("completeness", "product_view.price").value == 1.0
    assert r.metric("completeness", "session_id").status == "pass"
    assert r.metric("completeness", "user_id").status == "info"
    row = r.completeness.query("field == 'product_id' and event_type == 'product_view'").iloc[0]
    assert (row["events"], row["present"]) == (11, 9)
    v = r.metric("validity", "quarantine_rate")
    assert v.value == pytest.approx(1 / 16) and v.status == "fail"
    assert r.metric("validity", "reason.invalid_type").detail.startswith("1 quarantined")
    assert list(r.batches["quarantined"]) == [1, 0]
    assert r.metric("duplicates", "skipped_at_import").value == pytest.approx(1 / 16)
    assert r.metric("duplicates", "exact_content").value == pytest.approx(1 / 14)
    # lags: views are received 21..30 min after they happen, page views 9..11 h after
    late = r.metric("timeliness", "late_share")
    assert late.value == pytest.approx(3 / 14) and late.status == "warn"
    assert r.metric("timeliness", "lag_max_minutes").value == pytest.approx(660.0)
    assert r.status == "fail"


def test_thresholds_and_period(small: Workspace) -> None:
    lenient = Thresholds(
        completeness_warn=0.5,
        completeness_fail=0.1,
        quarantine_warn=0.2,
        quarantine_fail=0.5,
        late_warn=0.5,
        late_fail=0.9,
        duplicate_warn=0.5,
        duplicate_fail=0.9,
    )
    r = quality_report(small.store, small.settings, thresholds=lenient)
    assert r.metric("completeness", "product_view.product_id").status == "pass"
    assert r.metric("validity", "quarantine_rate").status == "pass"
    # a period holding only the page views
    r2 = quality_report(small.store, small.settings, as_of=datetime(2024, 5, 1, 3), days=1)
    assert r2.events == 3 and r2.start == datetime(2024, 4, 30, 3)
    assert r2.metric("timeliness", "late_share").value == 1.0


def test_to_frame_and_json(small: Workspace) -> None:
    r = quality_report(small.store, small.settings)
    frame = r.to_frame()
    assert list(frame.columns) == ["section", "name", "value", "status", "threshold", "detail"]
    assert set(frame["section"]) == {
        "completeness",
        "validity",
        "timeliness",
        "duplicates",
        "volume",
        "outliers",
    }
    assert set(frame["status"]) <= {"pass", "warn", "fail", "info"}
    data = json.loads(json.dumps(r.to_dict()))
    assert data["status"] == r.status and data["events"] == 14
    assert data["thresholds"]["sigma"] == 3.0


def test_volume_anomalies_spike_drop_and_zero_sessions() -> None:
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    counts = [100 + (i % 3) for i in range(40)]
    counts[30] = 400  # spike
    counts[35] = 5  # drop
    daily = pd.DataFrame({"day": days, "series": "page_view", "n": counts})
    found = volume_anomalies(daily, sigma=3.0, window=28, min_history=7)
    assert list(zip(found["day"].dt.day, found["kind"], strict=True)) == [
        (31, "spike"),
        (5, "drop"),
    ]
    # too little history: no verdict
    assert volume_anomalies(daily.head(5)).empty


def test_volume_section_flags_a_gap_day(tmp_path: Path) -> None:
    with Workspace.ephemeral(template()) as ws:
        lines = []
        for d in range(20):
            if d == 15:
                continue  # a day without any event or session
            for k in range(20):
                lines.append(
                    f"e{d}_{k},page_view,{datetime(2024, 3, 1) + timedelta(days=d, minutes=k * 40)},u{k},,"
                )
        load(ws, tmp_path / "v.csv", lines, now=datetime(2024, 4, 1))
        r = quality_report(ws.store, ws.settings)
        m = r.metric("volume", "days_without_sessions")
        assert m.value == 1 and "2024-03-16" in m.detail and m.status == "warn"
        assert (r.anomalies["day"] == pd.Timestamp("2024-03-16")).any()
        assert set(r.anomalies["kind"]) == {"drop"}


def test_outliers_flagged_and_saved(tmp_path: Path) -> None:
    with Workspace.ephemeral(template()) as ws:
        lines = [
            f"n{u}_{k},page_view,2024-05-01 10:{k:02d}:00,u{u},,"
            for u in range(40)
            for k in range(3)
        ]
        lines += [
            f"bot_{k},page_view,{datetime(2024, 5, 1) + timedelta(minutes=45 * k)},bot,,"
            for k in range(60)
        ]
        load(ws, tmp_path / "o.csv", lines, now=datetime(2024, 6, 1))
        bot = ws.profile_id("user_id:bot")
        assert outlier_profiles(ws.store) == [bot]
        assert ws.store.scalar("SELECT count(*) FROM quality_outliers") == 0
        outlier_profiles(ws.store, save=True)
        saved = ws.store.rows("SELECT DISTINCT profile_id FROM quality_outliers")
        assert saved == [(bot,)]
        assert {r[0] for r in ws.store.rows("SELECT metric FROM quality_outliers")} >= {
            "events",
            "sessions",
        }
        # excluding them is an anti-join
        kept = ws.store.scalar(
            "SELECT count(*) FROM profiles WHERE profile_id NOT IN (SELECT profile_id FROM quality_outliers)"
        )
        assert kept == 40
        r = quality_report(ws.store, ws.settings)
        m = r.metric("outliers", "outlier_profiles")
        assert m.value == pytest.approx(1 / 41) and m.status == "warn"
        assert set(r.outliers["profile_id"]) == {bot}


def test_flag_outliers_ignores_constant_metrics() -> None:
    act = pd.DataFrame(
        {
            "profile_id": list("abcd"),
            "events": [5, 5, 5, 5],
            "sessions": [1, 1, 1, 1],
            "active_days": [1, 1, 1, 1],
        }
    )
    assert flag_outliers(act).empty


def test_empty_store_reports_info() -> None:
    with Workspace.ephemeral(template()) as ws:
        r = quality_report(ws.store, ws.settings)
        assert r.events == 0
        assert r.metric("timeliness", "late_share").status == "info"
        assert r.metric("volume", "anomalous_days").status == "info"


def test_online_retail_duplicates_and_validity() -> None:
    if not RETAIL.exists():
        pytest.skip(f"dataset {RETAIL} not available")
    spec = SourceSpec.model_validate(
        {
            "fields": {
                "event_type": {"value": "purchase"},
                "timestamp": "InvoiceDate",
                "user_id": "CustomerID",
                "anonymous_id": {
                    "column": "InvoiceNo",
                    "prefix": "invoice:",
                    "when_missing": "CustomerID",
                },
                "order_id": "InvoiceNo",
                "product_id": "StockCode",
                "description": "Description",
                "quantity": "Quantity",
                "price": "UnitPrice",
                "country": "Country",
            }
        }
    )
    with Workspace.ephemeral(template({"description": "string"})) as ws:
        ws.import_events(RETAIL, spec=spec, source="online_retail")
        r = quality_report(ws.store, ws.settings)
        # pandas: 5,268 exact duplicate lines in the file (none among the 2 quarantined rows)
        raw = pd.read_csv(RETAIL, dtype=str, keep_default_na=False)
        assert int(raw.duplicated().sum()) == 5_268
        exact = r.metric("duplicates", "exact_content")
        assert round(exact.value * r.events) == 5_268
        assert r.metric("duplicates", "skipped_at_import").value == 0
        assert r.metric("validity", "quarantine_rate").value == pytest.approx(2 / 541_909)
        assert r.metric("validity", "quarantine_rate").status == "pass"
        desc = r.metric("completeness", "purchase.description")
        assert desc.value == pytest.approx(1 - 1_454 / 541_907, abs=1e-9)
        assert r.metric("completeness", "purchase.product_id").value == 1.0
        never = r.metric("completeness", "purchase.revenue")  # declared, but no source column
        assert never.status == "info" and never.detail.startswith("not collected")
        # the retailer does not trade on Saturdays: reported as days without sessions
        assert r.metric("volume", "days_without_sessions").value > 40
