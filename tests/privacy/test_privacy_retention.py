"""Retention job and data minimisation."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from privacy_support import T0, settings, write_jsonl

from microseg.config.models import (
    EventSpec,
    PrivacySettings,
    ProjectSettings,
    PropertySpec,
    Taxonomy,
)
from microseg.ingest.profiles import import_profiles
from microseg.privacy.consent import consent_state, record_consent
from microseg.privacy.retention import run_retention
from microseg.workspace import Workspace


def events(n_days: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for d in range(n_days):
        for etype in ("page_view", "purchase"):
            rows.append(
                {
                    "event_id": f"{etype}-{d}",
                    "event_type": etype,
                    "timestamp": (T0 + timedelta(days=d)).isoformat(),
                    "user_id": f"u{d % 3}",
                }
            )
    return rows


def test_retention_per_type_table_idempotent_and_audited(tmp_path: Path) -> None:
    ws = Workspace.ephemeral(
        settings(retention_days={"events": 30, "events.page_view": 7, "consents": 10, "sends": 5})
    )
    ws.import_events(write_jsonl(tmp_path / "e.jsonl", events(60)))
    now = T0 + timedelta(days=60)
    s = ws.store
    for i in range(5):  # p1: five changes, the oldest the one still in force for 'ads'
        record_consent(s, "p1", "email", i % 2 == 0, source="f", at=T0 + timedelta(days=i))
    record_consent(s, "p1", "ads", True, source="f", at=T0)
    for status, days in (("sent", 20), ("pending", 20), ("sent", 1)):
        s.execute(
            "INSERT INTO sends (send_key, channel, status, created_at, updated_at)"
            " VALUES (?, 'file', ?, ?, ?)",
            [f"{status}-{days}", status, now - timedelta(days=days), now],
        )
    dry = run_retention(ws, now, dry_run=True)
    assert s.scalar("SELECT count(*) FROM events") == 120
    report = run_retention(ws, now)
    assert report.deleted == dry.deleted
    # page views older than 7 days, other types older than 30 (cutoffs are exclusive)
    expect_pv = sum(1 for d in range(60) if T0 + timedelta(days=d) < now - timedelta(days=7))
    expect_other = sum(1 for d in range(60) if T0 + timedelta(days=d) < now - timedelta(days=30))
    assert report.deleted["events.page_view"] == expect_pv == 53
    assert report.deleted["events"] == expect_other == 30
    left = dict(s.rows("SELECT event_type, min(ts) FROM events GROUP BY 1"))
    assert left["page_view"] >= now - timedelta(days=7)
    assert left["purchase"] >= now - timedelta(days=30)
    assert report.deleted["consents"] == 4  # superseded email rows; both rows in force stay
    assert consent_state(s, "p1", "email", now).status == "granted"
    assert consent_state(s, "p1", "ads", now).status == "granted"
    assert report.deleted["sends"] == 1  # the pending send is kept
    assert {r[0] for r in s.rows("SELECT send_key FROM sends")} == {"pending-20", "sent-1"}
    audit = json.loads(s.scalar("SELECT details FROM audit_log WHERE action = 'retention.run'"))
    assert audit["deleted"]["events"] == 30
    # the deleted events' ids left the event-id index: it holds exactly the stored ones
    stored = s.rows("SELECT DISTINCT CAST(md5_number(event_id) >> 65 AS BIGINT) FROM events")
    assert sorted(h for (h,) in s.event_ids.con.execute("SELECT h FROM seen")) == sorted(
        h for (h,) in stored
    )
    again = run_retention(ws, now)
    assert again.total == 0
    assert s.scalar("SELECT count(*) FROM audit_log WHERE action = 'retention.run'") == 1


def test_retention_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="did you mean 'events'"):
        PrivacySettings(retention_days={"evnts": 3})
    with pytest.raises(ValueError, match="at least 1 day"):
        PrivacySettings(retention_days={"events": 0})
    with pytest.raises(ValueError, match=r"only 'events\.<event_type>'"):
        PrivacySettings(retention_days={"sends.email": 3})


def test_undeclared_event_properties_and_profile_columns_are_not_stored(tmp_path: Path) -> None:
    taxonomy = Taxonomy(
        events={"purchase": EventSpec(properties={"revenue": PropertySpec(type="number")})}
    )
    ws = Workspace.ephemeral(
        ProjectSettings(taxonomy=taxonomy, privacy=PrivacySettings(profile_attributes=["city"]))
    )
    row = {
        "event_id": "e1",
        "event_type": "purchase",
        "timestamp": T0.isoformat(),
        "user_id": "u1",
        "properties": {"revenue": 12.5, "ssn": "078-05-1120", "gps": "52.52,13.40"},
    }
    result = ws.import_events(write_jsonl(tmp_path / "e.jsonl", [row]))
    assert result.inserted == 1
    columns = set(ws.store.columns("events"))
    assert "revenue" in columns and not {"ssn", "gps"} & columns
    dump = ws.store.df("SELECT * FROM events").to_json(date_format="iso")
    assert "078-05-1120" not in dump and "52.52" not in dump
    crm = tmp_path / "crm.csv"
    pd.DataFrame(
        [{"user_id": "u1", "city": "Oslo", "religion": "x", "email": "a@b.no", "shoe": "44"}]
    ).to_csv(crm, index=False)
    import_profiles(ws.store, ws.settings, ws.keys, crm, id_column="user_id", source="crm")
    names = {r[0] for r in ws.store.rows("SELECT name FROM profile_attributes")}
    assert names == {"city"}  # declared plain attribute only
    assert {r[0] for r in ws.store.rows("SELECT field FROM pii_vault")} == {"email"}
