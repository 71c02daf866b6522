"""Bulk import: bad input is quarantined with a reason, every row is accounted for."""

from __future__ import annotations

import json
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.errors import ImportFileError
from microseg.ingest.pipeline import ImportResult
from microseg.workspace import Workspace

NOW = datetime(2024, 6, 1, 12, 0, 0)
HEADER = "event_id,event_type,timestamp,user_id,product_id,price\n"


def default_settings(**overrides: Any) -> ProjectSettings:
    """The bundled template settings, with top-level overrides."""
    raw = yaml.safe_load(files("microseg.config.templates").joinpath("microseg.yaml").read_text())
    raw.update(overrides)
    return ProjectSettings.model_validate(raw)


def run(
    ws: Workspace, path: Path, spec: SourceSpec | None = None, source: str = "test"
) -> ImportResult:
    from microseg.ingest.pipeline import import_events

    return import_events(ws.store, ws.settings, ws.keys, path, spec, source_name=source, now=NOW)


def accounted(r: ImportResult) -> None:
    assert r.rows_read == r.inserted + r.duplicates + r.quarantined
    assert sum(r.reasons.values()) == r.quarantined


@pytest.fixture()
def ws() -> Workspace:
    w = Workspace.ephemeral(default_settings())
    yield w
    w.close()


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def test_clean_csv_is_stored_with_types(ws: Workspace, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ok.csv",
        HEADER + "e1,product_view,2024-05-01 10:00:00,u1,p1,9.5\n"
        "e2,purchase,2024-05-01T11:00:00Z,u1,p1,19.99\n",
    )
    r = run(ws, path)
    accounted(r)
    assert (r.rows_read, r.inserted, r.quarantined) == (2, 2, 0)
    rows = ws.store.rows(
        "SELECT event_id, event_type, ts, price, id_key FROM events ORDER BY event_id"
    )
    assert rows[0] == ("e1", "product_view", datetime(2024, 5, 1, 10), 9.5, "user_id:u1")
    assert rows[1][3] == pytest.approx(19.99)


def test_bad_rows_quarantined_with_reasons_valid_rows_kept(ws: Workspace, tmp_path: Path) -> None:
    lines = [
        "ok1,product_view,2024-05-01 10:00:00,u1,p1,5",
        "bad_type,product_view,2024-05-01 10:00:00,u1,p1,cheap",  # invalid_type
        "neg,purchase,2024-05-01 10:00:00,u1,p1,-3",  # below_minimum (currency min 0)
        "unk,teleported,2024-05-01 10:00:00,u1,p1,1",  # unknown_event_type
        "fut,page_view,2024-07-01 10:00:00,u1,,",  # future_timestamp (NOW is 2024-06-01)
        "old,page_view,1970-01-02 00:00:00,u1,,",  # timestamp_too_old
        "nots,page_view,,u1,,",  # missing_timestamp
        "badts,page_view,yesterday,u1,,",  # invalid_timestamp
        ",page_view,2024-05-01 10:00:00,u1,,",  # missing_event_id
        "noet,,2024-05-01 10:00:00,u1,,",  # missing_event_type
        "noid,page_view,2024-05-01 10:00:00,,,",  # missing_identity
        "ok2,page_view,2024-05-01 10:05:00,u2,,",
    ]
    r = run(ws, write(tmp_path, "mixed.csv", HEADER + "\n".join(lines) + "\n"))
    accounted(r)
    assert r.rows_read == 12
    assert r.inserted == 2
    assert r.reasons == {
        "below_minimum": 1,
        "future_timestamp": 1,
        "invalid_timestamp": 1,
        "invalid_type": 1,
        "missing_event_id": 1,
        "missing_event_type": 1,
        "missing_identity": 1,
        "missing_timestamp": 1,
        "timestamp_too_old": 1,
        "unknown_event_type": 1,
    }
    assert sorted(r[0] for r in ws.store.rows("SELECT event_id FROM events")) == ["ok1", "ok2"]
    q = ws.quarantine()
    assert len(q) == 10
    by_reason = dict(zip(q["reason"], q["detail"], strict=True))
    assert "cheap" in by_reason["invalid_type"]
    assert "teleported" in by_reason["unknown_event_type"]
    # the mapped record is kept for replay; row numbers point at the file's data rows
    rec = json.loads(q.loc[q["reason"] == "unknown_event_type", "record"].iloc[0])
    assert rec["event_id"] == "unk" and rec["event_type"] == "teleported"
    assert int(q.loc[q["reason"] == "unknown_event_type", "row_number"].iloc[0]) == 4


def test_malformed_csv_lines_quarantined(ws: Workspace, tmp_path: Path) -> None:
    text = (
        HEADER
        + "e1,page_view,2024-05-01 10:00:00,u1,,\n"
        + "e2,page_view,2024-05-01 10:00:00,u1,,,,extra,columns\n"
        + 'e3,page_view,2024-05-01 10:00:00,u1,"unterminated,\n'
        + "e4,page_view,2024-05-01 10:01:00,u2,,\n"
    )
    r = run(ws, write(tmp_path, "broken.csv", text))
    accounted(r)
    assert r.inserted >= 2
    assert r.reasons.get("malformed_row", 0) >= 1
    stored = {x[0] for x in ws.store.rows("SELECT event_id FROM events")}
    assert {"e1", "e4"} <= stored and "e2" not in stored
    q = ws.quarantine(reason="malformed_row")
    assert q["detail"].str.contains("line").all()


def test_duplicate_ids_within_batch_and_across_imports(ws: Workspace, tmp_path: Path) -> None:
    text = (
        HEADER
        + "a,page_view,2024-05-01 10:00:00,u1,,\n"
        + "a,page_view,2024-05-01 10:09:00,u1,,\n"
        + "b,page_view,2024-05-01 10:01:00,u1,,\n"
    )
    path = write(tmp_path, "dups.csv", text)
    r1 = run(ws, path)
    accounted(r1)
    assert (r1.inserted, r1.duplicates) == (2, 1)
    # the first occurrence in the file wins
    assert ws.store.scalar("SELECT ts FROM events WHERE event_id = 'a'") == datetime(2024, 5, 1, 10)
    r2 = run(ws, path)
    accounted(r2)
    assert (r2.inserted, r2.duplicates, r2.quarantined) == (0, 3, 0)
    assert ws.store.scalar("SELECT count(*) FROM events") == 2
    batches = ws.store.rows(
        "SELECT rows_read, inserted, duplicates FROM import_batches ORDER BY started_at, inserted DESC"
    )
    assert sorted(batches) == [(3, 0, 3), (3, 2, 1)]


def test_reimport_does_not_quarantine_twice(ws: Workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.csv", HEADER + "x,teleported,2024-05-01 10:00:00,u1,,\n")
    run(ws, path)
    r = run(ws, path)
    assert r.quarantined == 1  # counted for the batch
    assert len(ws.quarantine()) == 1  # but kept once


def test_empty_and_header_only_files(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="empty"):
        run(ws, write(tmp_path, "empty.csv", ""))
    with pytest.raises(ImportFileError, match="not found"):
        run(ws, tmp_path / "nope.csv")
    r = run(ws, write(tmp_path, "header.csv", HEADER))
    assert (r.rows_read, r.inserted, r.quarantined) == (0, 0, 0)


def test_unknown_extension_asks_for_format(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="--format"):
        run(ws, write(tmp_path, "events.xyz", HEADER))


def test_latin1_bytes_in_utf8_file_then_fixed_by_encoding(ws: Workspace, tmp_path: Path) -> None:
    text = (
        HEADER
        + "e1,product_view,2024-05-01 10:00:00,u1,Caf\xe9,3\n"
        + "e2,product_view,2024-05-01 10:00:00,u2,plain,4\n"
    )
    path = write(tmp_path, "latin.csv", text.encode("latin-1"))
    r = run(ws, path)
    accounted(r)
    # the undecodable line is quarantined on its own; the clean line is kept
    assert (r.inserted, r.reasons) == (1, {"invalid_encoding": 1})
    q = ws.quarantine(reason="invalid_encoding")
    assert q["detail"].iloc[0].startswith("line 2: INVALID ENCODING")
    fixed = run(ws, path, SourceSpec(encoding="latin-1"))
    accounted(fixed)
    assert (fixed.inserted, fixed.duplicates, fixed.quarantined) == (1, 1, 0)
    assert ws.store.scalar("SELECT product_id FROM events WHERE event_id = 'e1'") == "Café"


def test_missing_mapped_column_did_you_mean(ws: Workspace, tmp_path: Path) -> None:
    path = write(
        tmp_path, "m.csv", "id,type,event_time,user\ne1,page_view,2024-05-01 10:00:00,u1\n"
    )
    spec = SourceSpec.model_validate(
        {
            "fields": {
                "event_id": "id",
                "event_type": "type",
                "timestamp": "event_tme",
                "user_id": "user",
            }
        }
    )
    with pytest.raises(ImportFileError, match="did you mean 'event_time'"):
        run(ws, path, spec)
    bad_field = SourceSpec.model_validate({"fields": {"prise": "id"}})
    with pytest.raises(ImportFileError, match="did you mean 'price'"):
        run(ws, path, bad_field)


def test_jsonl_with_malformed_lines_and_nested_paths(ws: Workspace, tmp_path: Path) -> None:
    lines = [
        json.dumps(
            {
                "event_id": "j1",
                "event_type": "add_to_cart",
                "timestamp": "2024-05-01T10:00:00+02:00",
                "user": {"id": "u1"},
                "price": 3,
            }
        ),
        "{not json",
        "[1, 2]",
        json.dumps(
            {
                "event_id": "j2",
                "event_type": "cart",
                "timestamp": "2024-05-01T10:00:00Z",
                "user": {"id": "u2"},
                "price": "2.5",
            }
        ),
    ]
    path = write(tmp_path, "e.jsonl", "\n".join(lines) + "\n")
    spec = SourceSpec.model_validate({"fields": {"user_id": "user.id"}})
    r = run(ws, path, spec)
    accounted(r)
    assert (r.rows_read, r.inserted) == (4, 2)
    assert r.reasons == {"malformed_json": 2}
    rows = dict(ws.store.rows("SELECT event_id, ts FROM events"))
    assert rows["j1"] == datetime(2024, 5, 1, 8, 0)  # +02:00 -> UTC
    assert ws.store.scalar("SELECT event_type FROM events WHERE event_id = 'j2'") == "add_to_cart"


def test_parquet_typed_columns(ws: Workspace, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["p1", "p2", "p3"],
            "event_type": ["purchase", "purchase", "page_view"],
            "timestamp": pa.array(
                [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 11), None], pa.timestamp("us")
            ),
            "user_id": pa.array([17850, 0, 12], pa.int64()),
            "price": pa.array([2.5, 1.0, None], pa.float64()),
            "quantity": pa.array([3, 1, None], pa.int32()),
        }
    )
    path = tmp_path / "e.parquet"
    pq.write_table(table, path)
    r = run(ws, path)
    accounted(r)
    # user_id 0 is a blocked placeholder -> missing identity; p3 has no timestamp
    assert r.reasons == {"missing_identity": 1, "missing_timestamp": 1}
    row = ws.store.rows("SELECT user_id, ts, price, quantity FROM events")
    assert row == [("17850", datetime(2024, 5, 1, 10), 2.5, 3.0)]


def test_parquet_timestamptz_and_local_zone(ws: Workspace, tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["a", "b"],
            "event_type": ["page_view", "page_view"],
            "aware": pa.array(
                [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 11)], pa.timestamp("us", tz="UTC")
            ),
            "user_id": ["u1", "u2"],
        }
    )
    pq.write_table(table, tmp_path / "tz.parquet")
    run(ws, tmp_path / "tz.parquet", SourceSpec.model_validate({"fields": {"timestamp": "aware"}}))
    assert dict(ws.store.rows("SELECT event_id, ts FROM events")) == {
        "a": datetime(2024, 5, 1, 10),
        "b": datetime(2024, 5, 1, 11),
    }


@pytest.mark.parametrize(
    ("value", "fmap", "expected"),
    [
        ("2024-05-01T10:00:00Z", {"column": "t"}, datetime(2024, 5, 1, 10)),
        ("2024-05-01T10:00:00+02:00", {"column": "t"}, datetime(2024, 5, 1, 8)),
        ("2024-05-01 10:00:00-0500", {"column": "t"}, datetime(2024, 5, 1, 15)),
        ("2024-05-01 10:00:00 UTC", {"column": "t"}, datetime(2024, 5, 1, 10)),
        ("2024-05-01 10:00:00", {"column": "t"}, datetime(2024, 5, 1, 10)),
        (
            "2024-05-01 10:00:00",
            {"column": "t", "timezone": "Europe/Paris"},
            datetime(2024, 5, 1, 8),
        ),
        (
            "2024-01-15 10:00:00",
            {"column": "t", "timezone": "America/New_York"},
            datetime(2024, 1, 15, 15),
        ),
        (
            "2024-05-01T10:00:00Z",
            {"column": "t", "timezone": "Europe/Paris"},
            datetime(2024, 5, 1, 10),
        ),
        ("01/05/2024 10:00", {"column": "t", "format": "%d/%m/%Y %H:%M"}, datetime(2024, 5, 1, 10)),
        ("1714557600", {"column": "t", "unit": "s"}, datetime(2024, 5, 1, 10)),
        ("1714557600000", {"column": "t", "unit": "ms"}, datetime(2024, 5, 1, 10)),
        ("1714557600000000", {"column": "t", "unit": "us"}, datetime(2024, 5, 1, 10)),
    ],
)
def test_timestamps_to_utc(
    ws: Workspace, tmp_path: Path, value: str, fmap: dict[str, Any], expected: datetime
) -> None:
    path = write(tmp_path, "ts.csv", f"event_id,event_type,t,user_id\ne1,page_view,{value},u1\n")
    r = run(ws, path, SourceSpec.model_validate({"fields": {"timestamp": fmap}}))
    assert r.inserted == 1, r.reasons
    assert ws.store.scalar("SELECT ts FROM events") == expected


def test_default_timezone_setting(tmp_path: Path) -> None:
    settings = default_settings(ingest={"default_timezone": "Asia/Tokyo"})
    with Workspace.ephemeral(settings) as w:
        run(
            w,
            write(
                tmp_path,
                "t.csv",
                "event_id,event_type,timestamp,user_id\ne,page_view,2024-05-01 09:00:00,u\n",
            ),
        )
        assert w.store.scalar("SELECT ts FROM events") == datetime(2024, 5, 1, 0)


def test_master_taxonomy_synonyms(ws: Workspace, tmp_path: Path) -> None:
    text = (
        "event_id,event_type,timestamp,user_id,store_id,region\n"
        "s1,store_visit,2024-05-01 10:00:00,u1,st1,NYC\n"
        "s2,store_visit,2024-05-01 10:00:00,u1,st1, new york city \n"
        "s3,store_visit,2024-05-01 10:00:00,u1,st1,Boston\n"
        "s4,VIEW,2024-05-01 10:00:00,u1,,\n"
        "s5,order_completed,2024-05-01 10:00:00,u1,,\n"
    )
    r = run(ws, write(tmp_path, "syn.csv", text))
    assert r.inserted == 5, r.reasons
    got = dict(ws.store.rows("SELECT event_id, coalesce(region, event_type) FROM events"))
    assert got == {
        "s1": "New York",
        "s2": "New York",
        "s3": "Boston",
        "s4": "product_view",
        "s5": "purchase",
    }


def test_blocked_identity_values(ws: Workspace, tmp_path: Path) -> None:
    text = (
        "event_id,event_type,timestamp,user_id,device_id\n"
        "b1,page_view,2024-05-01 10:00:00,undefined,\n"
        "b2,page_view,2024-05-01 10:00:00,0,\n"
        "b3,page_view,2024-05-01 10:00:00,NULL,dev-9\n"
        "b4,page_view,2024-05-01 10:00:00, u7 ,\n"
    )
    r = run(ws, write(tmp_path, "ids.csv", text))
    accounted(r)
    assert r.reasons == {"missing_identity": 2}
    assert dict(ws.store.rows("SELECT event_id, id_key FROM events")) == {
        "b3": "device_id:dev-9",
        "b4": "user_id:u7",
    }
    assert ws.store.scalar("SELECT user_id FROM events WHERE event_id = 'b3'") is None


def test_email_is_tokenised_and_validated(ws: Workspace, tmp_path: Path) -> None:
    text = (
        "event_id,event_type,timestamp,email\n"
        "m1,page_view,2024-05-01 10:00:00,Ann@Example.com\n"
        "m2,page_view,2024-05-01 10:00:00,not-an-email\n"
    )
    r = run(ws, write(tmp_path, "mail.csv", text))
    assert r.reasons == {"invalid_email": 1}
    token = ws.store.scalar("SELECT email_token FROM events")
    assert token and "example" not in token.lower()
    assert ws.store.scalar("SELECT id_key FROM events") == f"email:{token}"
    # the clear address is stored nowhere, not even in the quarantine record of the bad row
    assert "not-an-email" not in str(ws.quarantine()["record"].iloc[0])


def test_replay_after_taxonomy_fix_is_idempotent(tmp_path: Path) -> None:
    from microseg.ingest.quarantine import replay

    with Workspace.ephemeral(default_settings()) as w:
        text = (
            HEADER
            + "r1,wishlist_add,2024-05-01 10:00:00,u1,p1,5\n"
            + "r2,page_view,2024-05-01 10:00:00,u1,,\n"
            + "r3,wishlist_add,2024-05-01 10:01:00,u2,p2,\n"
        )
        r = run(w, write(tmp_path, "wish.csv", text))
        assert r.reasons == {"unknown_event_type": 2}
        raw = yaml.safe_load(
            files("microseg.config.templates").joinpath("microseg.yaml").read_text()
        )
        raw["taxonomy"]["events"]["wishlist_add"] = {
            "properties": {"product_id": "string", "price": "currency"}
        }
        fixed = ProjectSettings.model_validate(raw)
        results = replay(w.store, fixed, w.keys, now=NOW)
        assert sum(x.inserted for x in results) == 2
        assert sum(x.quarantined for x in results) == 0
        assert w.store.scalar("SELECT count(*) FROM events WHERE event_type = 'wishlist_add'") == 2
        assert w.store.scalar("SELECT price FROM events WHERE event_id = 'r1'") == 5.0
        assert len(w.quarantine()) == 0
        assert len(w.quarantine(status="replayed")) == 2
        again = replay(w.store, fixed, w.keys, now=NOW)
        assert sum(x.rows_read for x in again) == 0
        assert w.store.scalar("SELECT count(*) FROM events") == 3
        # re-importing the original file now only finds duplicates
        from microseg.ingest.pipeline import import_events

        r2 = import_events(
            w.store, fixed, w.keys, tmp_path / "wish.csv", source_name="test", now=NOW
        )
        assert (r2.inserted, r2.duplicates, r2.quarantined) == (0, 3, 0)


def test_replay_still_invalid_stays_quarantined(ws: Workspace, tmp_path: Path) -> None:
    from microseg.ingest.quarantine import replay

    run(ws, write(tmp_path, "x.csv", HEADER + "z1,teleported,2024-05-01 10:00:00,u1,,\n"))
    results = replay(ws.store, ws.settings, ws.keys, now=NOW)
    assert sum(x.quarantined for x in results) == 1
    open_q = ws.quarantine()
    assert list(open_q["reason"]) == ["unknown_event_type"]
    assert len(ws.quarantine(status="replayed")) == 1


def test_event_id_from_row_number_makes_reimport_idempotent(ws: Workspace, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "noid.csv",
        "event_type,timestamp,user_id\npage_view,2024-05-01 10:00:00,u1\npage_view,2024-05-01 10:00:01,u1\n",
    )
    assert run(ws, path, source="web").inserted == 2
    assert run(ws, path, source="web").duplicates == 2
    assert sorted(x[0] for x in ws.store.rows("SELECT event_id FROM events")) == ["web:1", "web:2"]
