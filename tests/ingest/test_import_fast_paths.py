"""The import's fast paths give the same store as the general path, case by case.

Parquet batches are streamed (a narrow key table, the file read again by the INSERT) unless
``pipeline.STREAM_PARQUET`` is off, which materialises the whole stage as CSV / JSON Lines
imports do. Each shortcut (no quarantine pass when all rows are valid, no anti-join when
no stored id can meet the batch, no first-occurrence window without repeats, no join when
nothing is filtered and sessions are given) is exercised here on data where it applies and
where it does not, and compared store by store — and against truths computed by hand.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from import_paths_support import (
    KEYS,
    NOW,
    counts,
    reference_sessions,
    run,
    snapshot,
    workspaces,
    write_csv,
    write_parquet,
)

from microseg.config.sources import SourceSpec
from microseg.ingest import commit, pipeline, reader

START = datetime(2024, 5, 1)
PRODUCT_EVENTS = ("product_view", "add_to_cart", "purchase")


def make_rows(
    n_users: int = 30, per_user: int = 10, seed: int = 0, prefix: str = "e", offset_min: int = 0
) -> list[dict[str, Any]]:
    """Valid events of n_users users with gaps around the 30-minute timeout, shuffled."""
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        t = START + timedelta(minutes=offset_min + rng.randrange(0, 600))
        for k in range(per_user):
            t += timedelta(minutes=rng.choice([0, 1, 5, 20, 30, 31, 45, 120]))
            kind = rng.choice(["page_view", *PRODUCT_EVENTS])
            row: dict[str, Any] = {
                "event_id": f"{prefix}{u}-{k}",
                "event_type": kind,
                "timestamp": t,
                "user_id": f"u{u}",
            }
            if kind in PRODUCT_EVENTS:
                row["product_id"] = f"p{rng.randrange(40)}"
                row["price"] = float(rng.randrange(1, 300))
            else:
                row["url"] = f"/c/{rng.randrange(5)}"
            rows.append(row)
    rng.shuffle(rows)
    return rows


def both_paths(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: list[Path],
    **kwargs: Any,
) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    """Import ``files`` in order into a streamed and a materialised store; assert they
    match and return (per-file counts, snapshot)."""
    with workspaces(2) as (streamed, materialised):
        got_s = [
            counts(run(streamed, KEYS, f, streamed=True, monkeypatch=monkeypatch, **kwargs))
            for f in files
        ]
        got_m = [
            counts(run(materialised, KEYS, f, streamed=False, monkeypatch=monkeypatch, **kwargs))
            for f in files
        ]
        assert got_s == got_m
        snap = snapshot(streamed)
        assert snap == snapshot(materialised)
        return got_s, snap


def test_all_valid_file_into_empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = make_rows()
    path = write_parquet(tmp_path / "a.parquet", rows, row_group_size=64)
    got, snap = both_paths(tmp_path, monkeypatch, [path])
    assert got == [(300, 300, 0, 0, {})]
    # planted truth: sessions by hand, one profile per user, no quarantine
    truth = reference_sessions(
        [(r["event_id"], "user_id:" + r["user_id"], r["timestamp"]) for r in rows]
    )
    assert {e[0]: e[9] for e in snap["events"]} == truth
    assert len(snap["profiles"]) == 30 and snap["quarantine"] == []
    # the CSV path (always materialised) stores the same events
    with workspaces(1) as (ws,):
        csv = write_csv(tmp_path / "a.csv", rows)
        assert counts(run(ws, KEYS, csv, streamed=True, monkeypatch=monkeypatch)) == got[0]
        assert {e[0]: e[9] for e in snapshot(ws)["events"]} == truth


def test_streamed_path_keeps_only_the_key_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, executed_sql: list[str]
) -> None:
    """The fast path is really taken: no wide stage, and the file is read by the INSERT."""
    path = write_parquet(tmp_path / "a.parquet", make_rows(5, 4))
    seen = executed_sql
    with workspaces(1) as (ws,):
        run(ws, KEYS, path, streamed=True, monkeypatch=monkeypatch)
    created = [s for s in seen if s.startswith("CREATE OR REPLACE TEMPORARY TABLE")]
    assert any(pipeline.KEYS in s for s in created)
    assert not any(pipeline.STAGE in s for s in created)
    inserts = [s for s in seen if s.startswith('INSERT INTO "events"')]
    assert len(inserts) == 1 and "READ_PARQUET" in inserts[0].upper()
    assert not any('INSERT INTO "quarantine"' in s for s in seen)  # all valid: no pass


def test_non_empty_store_overlap_and_continuing_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_rows(seed=1)
    # second file: 25 ids already stored (duplicates), new events of the same users that
    # continue or bridge their stored sessions, and new users
    later = make_rows(seed=2, prefix="f", offset_min=45)
    second = first[:25] + later + make_rows(n_users=5, seed=3, prefix="g")
    a = write_parquet(tmp_path / "a.parquet", first, row_group_size=100)
    b = write_parquet(tmp_path / "b.parquet", second, row_group_size=100)
    got, snap = both_paths(tmp_path, monkeypatch, [a, b])
    assert got == [(300, 300, 0, 0, {}), (375, 350, 25, 0, {})]
    every = first + later + make_rows(n_users=5, seed=3, prefix="g")
    truth = reference_sessions(
        [(r["event_id"], "user_id:" + r["user_id"], r["timestamp"]) for r in every]
    )
    # stored sessions that the second batch bridged were renamed: all equal a one-pass import
    assert {e[0]: e[9] for e in snap["events"]} == truth
    # a re-import stores nothing and quarantines nothing
    got_again, snap_again = both_paths(tmp_path, monkeypatch, [a, b, a, b])
    assert got_again[2:] == [(300, 0, 300, 0, {}), (375, 0, 375, 0, {})]
    assert snap_again["events"] == snap["events"]


def test_duplicates_within_the_batch_keep_the_first_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_rows(10, 5)
    twin = dict(rows[7], user_id="u999", timestamp=START)  # same id, other user/time
    rows = [*rows[:20], twin, *rows[20:], dict(rows[3])]
    path = write_parquet(tmp_path / "d.parquet", rows)
    got, snap = both_paths(tmp_path, monkeypatch, [path])
    assert got == [(52, 50, 2, 0, {})]
    stored = {e[0]: e for e in snap["events"]}
    assert stored[rows[7]["event_id"]][4] == rows[7]["user_id"]  # the first occurrence won
    assert "user_id:u999" not in {i[0] for i in snap["identities"]}


def mixed_rows() -> list[dict[str, Any]]:
    """Valid rows and one of each kind of invalid row (prices as text, as in a CSV)."""
    good = make_rows(6, 5, seed=4)
    for r in good:
        if "price" in r:
            r["price"] = f"{r['price']:.2f}"
    t = START + timedelta(hours=3)
    bad: list[dict[str, Any]] = [
        {"event_id": "x1", "event_type": "teleported", "timestamp": t, "user_id": "u1"},
        {
            "event_id": "x2",
            "event_type": "purchase",
            "timestamp": t,
            "user_id": "u1",
            "price": "abc",
        },
        {
            "event_id": "x3",
            "event_type": "purchase",
            "timestamp": t,
            "user_id": "u2",
            "price": "-3",
        },
        {"event_id": "x4", "event_type": "page_view", "timestamp": None, "user_id": "u2"},
        {"event_id": "x5", "event_type": "page_view", "timestamp": NOW + timedelta(days=2)},
        {"event_id": "x6", "event_type": "page_view", "timestamp": t, "user_id": "undefined"},
        {"event_id": None, "event_type": "page_view", "timestamp": t, "user_id": "u3"},
        {"event_id": "x8", "event_type": "page_view", "timestamp": t, "email": "not-an-email"},
        {"event_id": "x9", "event_type": "page_view", "timestamp": t, "email": " Ann@Example.com"},
    ]
    rows = good[:10] + bad[:5] + good[10:20] + bad[5:] + good[20:]
    for r in rows:
        r["timestamp"] = None if r["timestamp"] is None else r["timestamp"].isoformat(sep=" ")
    return rows


def test_mixed_valid_and_invalid_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = mixed_rows()
    path = write_parquet(tmp_path / "m.parquet", rows)
    got, snap = both_paths(tmp_path, monkeypatch, [path, path])
    reasons = {
        "below_minimum": 1,
        "future_timestamp": 1,
        "invalid_email": 1,
        "invalid_type": 1,
        "missing_event_id": 1,
        "missing_identity": 1,
        "missing_timestamp": 1,
        "unknown_event_type": 1,
    }
    assert got[0] == (39, 31, 0, 8, reasons) and got[1] == (39, 0, 31, 8, reasons)
    quarantined = snap["quarantine"]
    assert len(quarantined) == 8  # re-import adds no second open entry; x9 was stored
    by_row = {q[1]: q for q in quarantined}
    assert by_row[11][2] == "unknown_event_type" and by_row[11][3] == "event_type=teleported"
    assert by_row[12][2:4] == ("invalid_type", "price=abc is not number")
    record = json.loads(by_row[12][4])
    assert record["price"] == "abc" and record["event_id"] == "x2"
    # the valid email became a token; the clear address is stored nowhere
    x9 = next(e for e in snap["events"] if e[0] == "x9")
    assert x9[7] and x9[8] == "email:" + x9[7]
    assert "ann@example.com" not in json.dumps(snap, default=str).lower()
    # the CSV path agrees on what went where
    with workspaces(1) as (ws,):
        csv = write_csv(tmp_path / "m.csv", rows)
        r = run(ws, KEYS, csv, streamed=True, monkeypatch=monkeypatch)
        assert counts(r) == got[0]
        assert [q[1:4] for q in snapshot(ws)["quarantine"]] == [q[1:4] for q in quarantined]


def test_session_ids_from_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions given by the source: stored as given (no join when nothing is filtered;
    the join still drops repeats when something is)."""
    rows = make_rows(8, 4, seed=5)
    for r in rows:
        r["session_id"] = "web-" + r["user_id"]
    clean = write_parquet(tmp_path / "s.parquet", rows)
    repeated = write_parquet(tmp_path / "r.parquet", rows + rows[:3])
    cases: list[tuple[Path, tuple[Any, ...]]] = [
        (clean, (32, 32, 0, 0, {})),
        (repeated, (35, 32, 3, 0, {})),
    ]
    for path, expected in cases:
        got, snap = both_paths(tmp_path, monkeypatch, [path])
        assert got == [expected]
        assert {e[9] for e in snap["events"]} == {"web-u" + str(u) for u in range(8)}


def test_tied_timestamps_do_not_depend_on_event_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events at the same instant share a session whatever their ids' order."""
    t0 = START + timedelta(hours=1)
    rows: list[dict[str, Any]] = []
    for i, minutes in enumerate([0, 0, 0, 45, 45, 50, 120, 120]):
        for eid in (f"z{i}", f"a{i}"):  # ids sort the opposite way to file order
            rows.append(
                {
                    "event_id": eid,
                    "event_type": "page_view",
                    "timestamp": t0 + timedelta(minutes=minutes),
                    "user_id": "u1",
                }
            )
    path = write_parquet(tmp_path / "t.parquet", rows)
    _, snap = both_paths(tmp_path, monkeypatch, [path])
    truth = reference_sessions([(str(r["event_id"]), "user_id:u1", r["timestamp"]) for r in rows])
    assert {e[0]: e[9] for e in snap["events"]} == truth
    assert len(set(truth.values())) == 3


def test_chunked_streamed_import_equals_one_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = make_rows(20, 10, seed=6, prefix="k")
    for r in extra:
        r["timestamp"] = r["timestamp"].isoformat(sep=" ")
        if "price" in r:
            r["price"] = str(r["price"])
    rows = mixed_rows() + extra + mixed_rows()[:5]
    path = write_parquet(tmp_path / "c.parquet", rows, row_group_size=50)
    whole, snap = both_paths(tmp_path, monkeypatch, [path])
    chunked, snap_c = both_paths(tmp_path, monkeypatch, [path], chunk_rows=60)
    assert snap_c["events"] == snap["events"]
    assert [q[1:5] for q in snap_c["quarantine"]] == [q[1:5] for q in snap["quarantine"]]
    assert snap_c["identities"] == snap["identities"]
    w, c = whole[0], chunked[0]
    assert (c[0], c[1], c[2], c[3]) == (w[0], w[1], w[2], w[3]) == (244, 231, 5, 8)


def test_identities_and_edges_from_several_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pre-aggregated key pairs register the same identities, edges and times."""
    t = START
    rows = [
        {"event_id": "i1", "event_type": "page_view", "timestamp": t, "anonymous_id": "a1"},
        {
            "event_id": "i2",
            "event_type": "page_view",
            "timestamp": t + timedelta(minutes=5),
            "anonymous_id": "a1",
            "device_id": "d1",
        },
        {
            "event_id": "i3",
            "event_type": "page_view",
            "timestamp": t + timedelta(minutes=9),
            "user_id": "u1",
            "anonymous_id": "a1",
            "email": "u1@example.com",
        },
        {
            "event_id": "i4",
            "event_type": "page_view",
            "timestamp": t + timedelta(minutes=2),
            "user_id": "u1",
            "device_id": "d2",
        },
    ]
    path = write_parquet(tmp_path / "i.parquet", rows)
    _, snap = both_paths(tmp_path, monkeypatch, [path])
    assert len(snap["identities"]) == 5  # a1, d1, u1, email, d2
    u1 = next(i for i in snap["identities"] if i[0] == "user_id:u1")
    assert (u1[4], u1[5]) == (t + timedelta(minutes=2), t + timedelta(minutes=9))
    a1 = next(i for i in snap["identities"] if i[0] == "anonymous_id:a1")
    assert (a1[4], a1[5]) == (t, t + timedelta(minutes=9))
    assert len(snap["edges"]) == 4  # a1-d1, u1-a1, u1-email, u1-d2
    # new keys seen with a primary key join its profile; two primary keys stay apart
    by_key = {i[0]: i[3] for i in snap["identities"]}
    email = next(k for k in by_key if k.startswith("email:"))
    assert by_key["device_id:d2"] == by_key[email] == by_key["user_id:u1"]
    assert by_key["device_id:d1"] != by_key["anonymous_id:a1"]


def test_spec_mapping_and_csv_equal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped Parquet source (renamed columns, epoch-ms times) streams like the others."""
    rows = make_rows(6, 5, seed=7)
    mapped = [
        {
            "id": r["event_id"],
            "kind": r["event_type"],
            "at_ms": int((r["timestamp"] - datetime(1970, 1, 1)).total_seconds() * 1000),
            "customer": r["user_id"],
            "sku": r.get("product_id"),
        }
        for r in rows
    ]
    spec = SourceSpec.model_validate(
        {
            "fields": {
                "event_id": "id",
                "event_type": "kind",
                "timestamp": {"column": "at_ms", "unit": "ms"},
                "user_id": "customer",
                "product_id": "sku",
            }
        }
    )
    path = write_parquet(tmp_path / "p.parquet", mapped)
    got, snap = both_paths(tmp_path, monkeypatch, [path], spec=spec)
    assert got == [(30, 30, 0, 0, {})]
    assert {e[0]: e[2] for e in snap["events"]} == {r["event_id"]: r["timestamp"] for r in rows}


def test_cleanup_leaves_no_temp_relations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_parquet(tmp_path / "a.parquet", make_rows(3, 3) + make_rows(3, 3))
    with workspaces(1) as (ws,):
        run(ws, KEYS, path, streamed=True, monkeypatch=monkeypatch)
        left = ws.store.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '\\_ms\\_%'"
            " ESCAPE '\\'"
        )
        assert left == []
        assert commit.NEW == "_ms_new"


def test_auto_streams_only_files_read_in_parallel(tmp_path: Path) -> None:
    """Auto mode: a range of at least one row group per thread streams; one big row group
    is staged whole (its single-threaded read then happens once)."""
    rows = make_rows(10, 10)
    many = write_parquet(tmp_path / "many.parquet", rows, row_group_size=10)
    one = write_parquet(tmp_path / "one.parquet", rows, row_group_size=1000)
    assert reader.row_groups(many, None) == 10 and reader.row_groups(one, None) == 1
    assert reader.row_groups(many, (15, 35)) == 3
    with workspaces(1) as (ws,):
        ws.store.execute("SET threads = 2")
        assert pipeline.STREAM_PARQUET is None
        assert pipeline._streamed(ws.store, many, "parquet", None)
        assert pipeline._streamed(ws.store, many, "parquet", (0, 20))
        assert not pipeline._streamed(ws.store, many, "parquet", (0, 10))
        assert not pipeline._streamed(ws.store, one, "parquet", None)
        assert not pipeline._streamed(ws.store, many, "csv", None)
        # erasure markers force the materialised stage (the guard updates it)
        ws.store.execute("INSERT INTO erasure_markers VALUES ('m', 'e1', TIMESTAMP '2024-01-01')")
        assert not pipeline._streamed(ws.store, many, "parquet", None)


def test_email_tokens_with_a_small_token_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token function remembers tokens per value; a full cache is emptied, never wrong."""
    from microseg.privacy.crypto import normalise_email

    rows = []
    for i in range(60):
        email = f"  Person{i % 10}@Example.com " if i % 2 else f"person{i % 10}@example.com"
        rows.append(
            {
                "event_id": f"m{i}",
                "event_type": "page_view",
                "timestamp": START + timedelta(minutes=i),
                "email": email,
            }
        )
    path = write_parquet(tmp_path / "e.parquet", rows, row_group_size=7)
    _, default = both_paths(tmp_path, monkeypatch, [path])
    monkeypatch.setattr(pipeline, "TOKEN_CACHE_SIZE", 3)
    _, small = both_paths(tmp_path, monkeypatch, [path])
    assert small == default
    expected = {f"m{i}": KEYS.token(normalise_email(str(r["email"]))) for i, r in enumerate(rows)}
    assert {e[0]: e[7] for e in default["events"]} == expected
    assert len({e[8] for e in default["events"]}) == 10  # one id key per person
