"""Bad values the import used to accept or choke on: non-finite numbers, impossible UTC
offsets, stray carriage returns; and closing unparsable-line entries after a fixed file."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_pipeline_validation import accounted, default_settings, run, write

from microseg.config.sources import SourceSpec
from microseg.errors import ImportFileError
from microseg.workspace import Workspace

CSV_HEAD = "event_id,event_type,timestamp,user_id,price,quantity\n"
TS = "2024-05-01 10:00:00"


@pytest.fixture()
def ws() -> Workspace:
    w = Workspace.ephemeral(default_settings())
    yield w
    w.close()


def stored(ws: Workspace) -> set[str]:
    return {r[0] for r in ws.store.rows("SELECT event_id FROM events")}


def quarantined(ws: Workspace) -> dict[str, str]:
    """event id (from the record) -> reason, of the open entries."""
    out = {}
    for record, reason in ws.store.rows(
        "SELECT record, reason FROM quarantine WHERE status = 'open' AND record IS NOT NULL"
    ):
        out[json.loads(record)["event_id"]] = reason
    return out


# ------------------------------------------------------------------ non-finite numbers
NON_FINITE_TEXT = ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "-1e999"]


def test_non_finite_numbers_in_csv_are_quarantined(ws: Workspace, tmp_path: Path) -> None:
    rows = [f"n{i},purchase,{TS},u1,{v},1" for i, v in enumerate(NON_FINITE_TEXT)]
    rows += [f"q{i},purchase,{TS},u1,1,{v}" for i, v in enumerate(NON_FINITE_TEXT)]
    rows += [
        "ok1,purchase,2024-05-01 10:00:00,u1,2.5,3",
        "ok2,purchase,2024-05-01 10:00:00,u1,1e3,1",
    ]
    r = run(ws, write(tmp_path, "nf.csv", CSV_HEAD + "\n".join(rows) + "\n"))
    accounted(r)
    assert r.reasons == {"non_finite_number": 2 * len(NON_FINITE_TEXT)}
    assert stored(ws) == {"ok1", "ok2"}
    assert ws.store.scalar("SELECT price FROM events WHERE event_id = 'ok2'") == 1000.0
    detail = ws.store.scalar("SELECT detail FROM quarantine WHERE record->>'event_id' = 'n0'")
    assert detail == "price=NaN is not a finite number"


def test_non_finite_numbers_in_json_lines_are_quarantined(ws: Workspace, tmp_path: Path) -> None:
    base = '{"event_id": "%s", "event_type": "purchase", "timestamp": "%s", "user_id": "u1", '
    lines = [
        (base % ("lit-nan", TS)) + '"price": NaN}',  # JSON5-style literals DuckDB accepts
        (base % ("lit-inf", TS)) + '"price": -Infinity}',
        (base % ("big", TS)) + '"price": 1e999}',  # overflows to infinity
        (base % ("text-inf", TS)) + '"price": "Infinity"}',
        (base % ("qty-nan", TS)) + '"price": 1, "quantity": "NaN"}',
        (base % ("ok", TS)) + '"price": 1.5, "quantity": 2}',
    ]
    r = run(ws, write(tmp_path, "nf.jsonl", "\n".join(lines) + "\n"))
    accounted(r)
    assert r.reasons == {"non_finite_number": 5}
    assert stored(ws) == {"ok"}
    assert set(quarantined(ws).values()) == {"non_finite_number"}


def test_non_finite_floats_in_parquet_are_quarantined(ws: Workspace, tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    table = pa.table(
        {
            "event_id": ["a", "b", "c", "d", "e"],
            "event_type": ["purchase"] * 5,
            "timestamp": pa.array([datetime(2024, 5, 1, 10)] * 5, pa.timestamp("us")),
            "user_id": ["u1"] * 5,
            "price": pa.array([nan, inf, -inf, 3.0, 4.0], pa.float64()),
            "quantity": pa.array([1.0, 1.0, 1.0, nan, None], pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "nf.parquet")
    r = run(ws, tmp_path / "nf.parquet")
    accounted(r)
    # -inf is below the currency minimum too: the non-finite check comes first
    assert r.reasons == {"non_finite_number": 4}
    assert stored(ws) == {"e"}


def test_integer_property_rejects_non_finite_as_invalid_type(tmp_path: Path) -> None:
    raw = default_settings().model_dump(exclude_none=True)
    raw["taxonomy"]["events"]["quiz"] = {"properties": {"score": "integer"}}
    w = Workspace.ephemeral(default_settings(taxonomy=raw["taxonomy"]))
    try:
        text = "event_id,event_type,timestamp,user_id,score\n"
        text += f"a,quiz,{TS},u1,NaN\nb,quiz,{TS},u1,Infinity\nc,quiz,{TS},u1,7\n"
        r = run(w, write(tmp_path, "int.csv", text))
        assert r.reasons == {"invalid_type": 2}
        assert stored(w) == {"c"}
    finally:
        w.close()


# ------------------------------------------------------------------ UTC offsets
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T10:00:00+99:00", None),
        ("2024-05-01T10:00:00-25:00", None),
        ("2024-05-01T10:00:00+12:75", None),
        ("2024-05-01T10:00:00+14:30", None),
        ("2024-05-01T10:00:00-12:30", None),
        ("2024-05-01T10:00:00+15", None),
        ("2024-05-01T10:00:00-1300", None),
        ("2024-05-01T10:00:00+05:30:75", None),
        ("2024-05-01T10:00:00+14:00", datetime(2024, 4, 30, 20)),
        ("2024-05-01T10:00:00-12:00", datetime(2024, 5, 1, 22)),
        ("2024-05-01T10:00:00.250+13:59", datetime(2024, 4, 30, 20, 1, 0, 250000)),
        ("2024-05-01T10:00:00-0930", datetime(2024, 5, 1, 19, 30)),
        ("2024-05-01 10:00+01", datetime(2024, 5, 1, 9)),
        ("2024-05-01T10:00:00+05:30:00", datetime(2024, 5, 1, 4, 30)),  # was dropped before
        ("2024-05-01T10:00:00-00:00", datetime(2024, 5, 1, 10)),
    ],
)
def test_utc_offsets_outside_the_earths_range_are_invalid(
    ws: Workspace, tmp_path: Path, value: str, expected: datetime | None
) -> None:
    path = write(
        tmp_path, "off.csv", f"event_id,event_type,timestamp,user_id\ne1,page_view,{value},u\n"
    )
    r = run(ws, path)
    accounted(r)
    if expected is None:
        assert r.reasons == {"invalid_timestamp": 1}
        detail = ws.store.scalar("SELECT detail FROM quarantine")
        assert detail == f"timestamp={value}"
    else:
        assert r.inserted == 1, r.reasons
        assert ws.store.scalar("SELECT ts FROM events") == expected


def test_a_date_alone_is_local_midnight_not_an_offset(tmp_path: Path) -> None:
    """'2024-05-25' ends like an offset ('-25') but has none: it is midnight in the zone."""
    w = Workspace.ephemeral(default_settings(ingest={"default_timezone": "Europe/Paris"}))
    try:
        text = "event_id,event_type,timestamp,user_id\na,page_view,2024-05-25,u\n"
        assert run(w, write(tmp_path, "d.csv", text)).inserted == 1
        assert w.store.scalar("SELECT ts FROM events") == datetime(2024, 5, 24, 22)
    finally:
        w.close()


# ------------------------------------------------------------------ stray carriage returns
def test_stray_cr_in_a_csv_row_quarantines_that_row_only(ws: Workspace, tmp_path: Path) -> None:
    data = (
        b"event_id,event_type,timestamp,user_id\n"
        b"c1,page_view,2024-05-01 10:00:00,u1\n"
        b"c2,page_\rview,2024-05-01 10:00:00,u1\n"
        b'c3,page_view,2024-05-01 10:00:00,"u\r2"\n'  # inside quotes: data
        b"c4,page_view,2024-05-01 10:00:00,u4\r\n"  # a CRLF line end
        b"c5,page_view,2024-05-01 10:00:00,u\r5\n"  # last field: was stored truncated
        b"c6,page_view,2024-05-01 10:00:00,u6,too,many\n"
        b"c7,page_view,2024-05-01 10:00:00,u7\n"
    )
    r = run(ws, write(tmp_path, "cr.csv", data))
    accounted(r)
    assert r.rows_read == 7
    assert r.reasons == {"malformed_row": 3}
    assert stored(ws) == {"c1", "c3", "c4", "c7"}
    assert ws.store.scalar("SELECT user_id FROM events WHERE event_id = 'c3'") == "u\r2"
    lines = ws.store.rows(
        "SELECT row_number, detail FROM quarantine WHERE reason = 'malformed_row' ORDER BY 1"
    )
    assert [n for n, _ in lines] == [3, 6, 7]
    assert lines[0][1] == "line 3: STRAY CARRIAGE RETURN: c2,page_\\rview,2024-05-01 10:00:00,u1"
    assert "TOO MANY COLUMNS" in lines[2][1]  # later line numbers stay right


def test_stray_cr_in_crlf_and_gzip_files(ws: Workspace, tmp_path: Path) -> None:
    text = (
        b"event_id,event_type,timestamp,user_id\r\n"
        b"g1,page_view,2024-05-01 10:00:00,u1\r\n"
        b"g2,page_view,2024-05-01 10:00:00\r,u1\r\n"
        b"g3,page_view,2024-05-01 10:00:00,u3\r\n"
    )
    path = tmp_path / "cr.csv.gz"
    path.write_bytes(gzip.compress(text))
    r = run(ws, path, SourceSpec(format="csv"))
    accounted(r)
    assert (r.inserted, r.reasons) == (2, {"malformed_row": 1})
    assert ws.store.scalar("SELECT row_number FROM quarantine") == 3


def test_cr_in_the_header_is_a_clear_error(ws: Workspace, tmp_path: Path) -> None:
    data = b"event_id,event_\rtype,timestamp,user_id\ne1,page_view,2024-05-01 10:00:00,u1\n"
    with pytest.raises(ImportFileError, match=r"line 1 \(the header\).*carriage return"):
        run(ws, write(tmp_path, "h.csv", data))


def test_files_with_cr_line_ends_only_are_read_as_before(ws: Workspace, tmp_path: Path) -> None:
    data = b"event_id,event_type,timestamp,user_id\ro1,page_view,2024-05-01 10:00:00,u1\r"
    data += b"o2,page_view,2024-05-01 10:00:00,u2\r"
    r = run(ws, write(tmp_path, "mac.csv", data))
    assert (r.inserted, r.quarantined) == (2, 0)


def test_stray_cr_in_json_lines(ws: Workspace, tmp_path: Path) -> None:
    head = '{"event_id": "%s", "event_type": "page_view", "timestamp": "2024-05-01 10:00:00",'
    lines = [
        (head % "j1") + ' "user_id": "u1"}',
        (head % "j2") + '\r"user_id": "u2"}',  # between tokens: JSON whitespace
        (head % "j3") + ' "user_id": "u\r3"}',  # raw CR inside a string: not JSON
        (head % "j4") + ' "user_id": "\\"u4\\"\r"}',  # after escaped quotes: still a string
        (head % "j5") + ' "user_id": "u5"}',
    ]
    r = run(ws, write(tmp_path, "cr.jsonl", "\n".join(lines).encode() + b"\n"))
    accounted(r)
    assert r.rows_read == 5
    assert r.reasons == {"malformed_json": 2}
    assert stored(ws) == {"j1", "j2", "j5"}
    rows = [n for (n,) in ws.store.rows("SELECT row_number FROM quarantine ORDER BY 1")]
    assert rows == [3, 4]


# ------------------------------------------------------------------ closing entries
def open_entries(ws: Workspace) -> list[tuple[int, str]]:
    return ws.store.rows(
        "SELECT row_number, reason FROM quarantine WHERE status = 'open' ORDER BY 1"
    )


def test_reimporting_the_fixed_csv_closes_its_malformed_rows(ws: Workspace, tmp_path: Path) -> None:
    head = b"event_id,event_type,timestamp,user_id\n"
    broken = (
        head
        + b"a,page_view,2024-05-01 10:00:00,u1\n"
        + b"b,page_view,2024-05-01 10:00:00,u1,extra\n"  # line 3
        + b"c,page_\rview,2024-05-01 10:00:00,u1\n"  # line 4
        + b"d,page_view\n"  # line 5, stays broken
    )
    path = write(tmp_path, "daily.csv", broken)
    run(ws, path)
    assert open_entries(ws) == [(3, "malformed_row"), (4, "malformed_row"), (5, "malformed_row")]
    # importing another source whose lines parse closes nothing of this one
    other = head + b"x,page_view,2024-05-01 10:00:00,u1\n" * 5
    run(ws, write(tmp_path, "other.csv", other), source="other")
    assert len(open_entries(ws)) == 3
    fixed = (
        head
        + b"a,page_view,2024-05-01 10:00:00,u1\n"
        + b"b,page_view,2024-05-01 10:00:00,u1\n"
        + b"c,teleported,2024-05-01 10:00:00,u1\n"  # parses now, but another problem
        + b"d,page_view\n"
    )
    path.write_bytes(fixed)
    r = run(ws, path)
    accounted(r)
    assert stored(ws) == {"a", "b", "x"}
    closed = ws.store.rows(
        "SELECT row_number, status, resolved_at IS NOT NULL FROM quarantine"
        " WHERE reason = 'malformed_row' AND source = 'test' ORDER BY 1"
    )
    assert closed == [(3, "replayed", True), (4, "replayed", True), (5, "open", False)]
    assert quarantined(ws) == {"c": "unknown_event_type"}
    assert (
        ws.store.scalar("SELECT count(*) FROM audit_log WHERE action = 'quarantine_resolved'") == 1
    )


def test_other_sources_and_row_ranges_keep_their_entries(ws: Workspace, tmp_path: Path) -> None:
    head = "event_id,event_type,timestamp,user_id\n"
    bad = write(tmp_path, "a.csv", head + "a,page_view,2024-05-01 10:00:00,u1,extra\n")
    run(ws, bad, source="feed-a")
    good = write(tmp_path, "b.csv", head + "b,page_view,2024-05-01 10:00:00,u1\n")
    run(ws, good, source="feed-b")
    assert open_entries(ws) == [(2, "malformed_row")]
    run(ws, good, source="feed-a")  # same source name, line 2 parses now
    assert open_entries(ws) == []


def test_reimporting_fixed_json_lines_closes_malformed_json(ws: Workspace, tmp_path: Path) -> None:
    good: dict[str, Any] = {"event_type": "page_view", "timestamp": TS, "user_id": "u"}
    lines = [
        json.dumps({**good, "event_id": "a"}),
        "{broken",
        "[1]",
        json.dumps({**good, "event_id": "d"}),
    ]
    path = write(tmp_path, "e.jsonl", "\n".join(lines) + "\n")
    run(ws, path)
    assert open_entries(ws) == [(2, "malformed_json"), (3, "malformed_json")]
    lines[1] = json.dumps({**good, "event_id": "b"})
    path.write_text("\n".join(lines) + "\n")
    run(ws, path)
    assert open_entries(ws) == [(3, "malformed_json")]
    assert stored(ws) == {"a", "b", "d"}


def test_mixed_crlf_and_lf_line_ends_are_read(ws: Workspace, tmp_path: Path) -> None:
    """Two files concatenated: DuckDB refused the mix; quoted line breaks stay data."""
    csv = (
        b"event_id,event_type,timestamp,user_id\r\n"
        b'm1,page_view,2024-05-01 10:00:00,"u\r\n1"\r\n'
        b"m2,page_view,2024-05-01 10:00:00,u2\n"
        b"m3,page_view,2024-05-01 10:00:00,u3\n"
    )
    r = run(ws, write(tmp_path, "mixed.csv", csv))
    assert (r.inserted, r.quarantined) == (3, 0)
    assert ws.store.scalar("SELECT user_id FROM events WHERE event_id = 'm1'") == "u\r\n1"
    head = '{"event_id": "%s", "event_type": "page_view", "timestamp": "2024-05-01 10:00:00",'
    jsonl = ((head % "j1") + ' "user_id": "u"}\r\n' + (head % "j2") + ' "user_id": "u"}\n').encode()
    r = run(ws, write(tmp_path, "mixed.jsonl", jsonl), source="j")
    assert (r.inserted, r.quarantined) == (2, 0)


def test_a_quarantine_replay_closes_no_unparsable_line(tmp_path: Path) -> None:
    """Replay imports a file of records under the source's name: its lines are not the
    source's lines, so the malformed_row entries stay open."""
    raw = default_settings().model_dump(exclude_none=True)
    w = Workspace.ephemeral(default_settings(taxonomy=raw["taxonomy"]))
    try:
        head = "event_id,event_type,timestamp,user_id\n"
        text = head + "a,page_view,2024-05-01 10:00:00,u1,extra\n"  # line 2: malformed
        text += "b,teleported,2024-05-01 10:00:00,u1\n"  # unknown type: replayable
        run(w, write(tmp_path, "feed.csv", text), source="feed")
        assert open_entries(w) == [(1, "unknown_event_type"), (2, "malformed_row")]
        raw["taxonomy"]["events"]["teleported"] = {"properties": {}}
        fixed = default_settings(taxonomy=raw["taxonomy"])
        from microseg.ingest.quarantine import replay

        results = replay(w.store, fixed, w.keys, now=datetime(2024, 6, 1, 12))
        assert [r.inserted for r in results] == [1]
        assert open_entries(w) == [(2, "malformed_row")]
    finally:
        w.close()
