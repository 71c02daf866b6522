"""The event-id index: a superset of the stored ids, so dedup never reads all stored ids.

Every case checks the property that matters: an import stores each id exactly once, whatever
state the index file is in (fresh, missing, another store's, behind the store, left open by
a machine that went down, damaged), and the index is rebuilt exactly when it may lack an id.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlglot import exp

from microseg.ingest import sessions
from microseg.ingest.pipeline import ImportResult
from microseg.store import Store, event_ids
from microseg.store.sql import render
from microseg.workspace import Workspace

NOW = datetime(2024, 6, 2, 12, 0)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    Workspace.init(tmp_path / "proj", "ids").close()
    return tmp_path / "proj"


@pytest.fixture
def ws(project: Path) -> Iterator[Workspace]:
    with Workspace.open(project) as w:
        yield w


def _csv(folder: Path, name: str, ids: list[str], day: int = 1) -> Path:
    path = folder / f"{name}.csv"
    lines = [
        f"{i},page_view,2024-06-0{day}T10:{k % 60:02d}:00Z,u{k % 7}" for k, i in enumerate(ids)
    ]
    path.write_text("event_id,event_type,timestamp,user_id\n" + "\n".join(lines) + "\n")
    return path


def _import(ws: Workspace, path: Path, now: datetime = NOW) -> ImportResult:
    from microseg.ingest.pipeline import import_events

    return import_events(ws.store, ws.settings, ws.keys, path, source_name=path.stem, now=now)


def _crash(*args: object, **kwargs: object) -> bool:
    raise RuntimeError("crash after the claim")


def _stored(ws: Workspace) -> tuple[int, int]:
    return ws.store.scalar("SELECT (count(*), count(DISTINCT event_id)) FROM events")


def _index_file(ws: Workspace) -> Path:
    assert ws.store.path is not None
    return ws.store.path.with_name(ws.store.path.name + ".event-ids")


def test_the_hash_is_the_same_in_duckdb_and_python() -> None:
    store = Store()
    ids = ["e1", "s1234-7", "ünïcödé-✓", "x" * 300, ""]
    select = "SELECT CAST(md5_number(i) >> 65 AS BIGINT) FROM unnest(?) AS t(i)"
    assert [r[0] for r in store.rows(select, [ids])] == [event_ids.py_id_hash(i) for i in ids]
    rendered = store.rows("SELECT " + render(event_ids.id_hash(exp.Literal.string("e1"))))
    assert rendered[0][0] == event_ids.py_id_hash("e1")
    assert all(0 <= event_ids.py_id_hash(i) < 2**63 for i in ids)


def test_new_ids_are_not_looked_up_in_events_and_repeats_are(
    ws: Workspace, tmp_path: Path, executed_sql: list[str]
) -> None:
    seen = executed_sql
    first = _import(ws, _csv(tmp_path, "a", [f"a{k}" for k in range(50)]))
    second = _import(ws, _csv(tmp_path, "b", [f"b{k}" for k in range(50)]), NOW + timedelta(1))
    assert (first.inserted, second.inserted) == (50, 50)
    assert not [s for s in seen if "_ms_hits" in s]  # nothing known: events not read for ids
    later = NOW + timedelta(days=30)
    again = _import(ws, _csv(tmp_path, "c", [f"b{k}" for k in range(20)] + ["c1"]), later)
    assert (again.inserted, again.duplicates) == (1, 20)
    assert [s for s in seen if "_ms_hits" in s and "received_at" in s]
    assert _stored(ws) == (101, 101)
    assert ws.store.event_ids.size() == 101


def test_the_confirmation_reads_only_rows_received_since_the_first_claim(ws: Workspace) -> None:
    store = ws.store
    with store.lock, store.transaction():
        claim = store.event_ids.claim(store, "SELECT 42::BIGINT AS h", NOW)
    assert (claim.new, claim.known, claim.confirm_since) == (1, 0, None)
    with store.lock, store.transaction():
        again = store.event_ids.claim(
            store, "SELECT * FROM (VALUES (42::BIGINT), (43)) AS t(h)", NOW + timedelta(days=9)
        )
    assert (again.new, again.known) == (1, 1)
    assert again.confirm_since == NOW - event_ids.CONFIRM_MARGIN
    assert store.scalar("SELECT generation FROM event_id_index") == store.event_ids.generation


def test_a_missing_index_is_rebuilt_and_still_finds_every_stored_id(
    project: Path, tmp_path: Path
) -> None:
    with Workspace.open(project) as ws:
        _import(ws, _csv(tmp_path, "a", [f"a{k}" for k in range(40)]))
        index = _index_file(ws)
    index.unlink()  # e.g. a store from before the index, or a copied database file
    with Workspace.open(project) as ws:
        result = _import(ws, _csv(tmp_path, "b", [f"a{k}" for k in range(10, 50)]))
        assert (result.inserted, result.duplicates) == (10, 30)
        assert ws.store.event_ids.rebuilds == 1
        assert _stored(ws) == (50, 50)


def test_an_index_behind_the_store_is_rebuilt(project: Path, tmp_path: Path) -> None:
    with Workspace.open(project) as ws:
        _import(ws, _csv(tmp_path, "a", [f"a{k}" for k in range(30)]))
        index = _index_file(ws)
    snapshot = tmp_path / "old-index"
    shutil.copy(index, snapshot)  # (closed cleanly: no WAL beside it)
    with Workspace.open(project) as ws:
        _import(ws, _csv(tmp_path, "b", [f"b{k}" for k in range(30)]))
    shutil.copy(snapshot, index)  # restored from an older backup: lacks the b ids
    with Workspace.open(project) as ws:
        result = _import(ws, _csv(tmp_path, "c", [f"b{k}" for k in range(30)] + ["c0"]))
        assert (result.inserted, result.duplicates) == (1, 30)
        assert ws.store.event_ids.rebuilds == 1
        assert _stored(ws) == (61, 61)


def test_another_stores_index_is_rebuilt(tmp_path: Path) -> None:
    for name in ("p1", "p2"):
        Workspace.init(tmp_path / name, name).close()
    with Workspace.open(tmp_path / "p1") as one:
        _import(one, _csv(tmp_path, "a", [f"a{k}" for k in range(5)]))
        theirs = _index_file(one)
    with Workspace.open(tmp_path / "p2") as two:
        _import(two, _csv(tmp_path, "b", [f"b{k}" for k in range(5)]))
        ours = _index_file(two)
    shutil.copy(theirs, ours)
    with Workspace.open(tmp_path / "p2") as two:
        result = _import(two, _csv(tmp_path, "c", ["b1", "a1"]))
        assert (result.inserted, result.duplicates) == (1, 1)  # a1 is new here, b1 is not
        assert two.store.event_ids.rebuilds == 1


def _set_meta(index: Path, **values: str) -> None:
    con = sqlite3.connect(index)
    con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))
    con.commit()
    con.close()


def test_an_index_left_open_when_the_machine_went_down_is_rebuilt(
    project: Path, tmp_path: Path
) -> None:
    with Workspace.open(project) as ws:
        _import(ws, _csv(tmp_path, "a", ["a1", "a2"]))
        index = _index_file(ws)
    _set_meta(index, open="0", boot_id="an-earlier-boot")
    with Workspace.open(project) as ws:  # closed cleanly before the reboot: kept
        _import(ws, _csv(tmp_path, "b", ["b1"]))
        assert ws.store.event_ids.rebuilds == 0
    _set_meta(index, open="1")  # a process killed on this boot: its writes are in the file
    with Workspace.open(project) as ws:
        _import(ws, _csv(tmp_path, "c", ["c1"]))
        assert ws.store.event_ids.rebuilds == 0
    _set_meta(index, open="1", boot_id="an-earlier-boot")  # open when the OS went down
    with Workspace.open(project) as ws:
        result = _import(ws, _csv(tmp_path, "d", ["a1", "b1", "d1"]))
        assert (result.inserted, result.duplicates) == (1, 2)
        assert ws.store.event_ids.rebuilds == 1


def test_a_damaged_index_is_replaced(project: Path, tmp_path: Path) -> None:
    with Workspace.open(project) as ws:
        _import(ws, _csv(tmp_path, "a", ["a1", "a2"]))
        index = _index_file(ws)
    index.write_bytes(b"not a database" * 1000)
    with Workspace.open(project) as ws:
        result = _import(ws, _csv(tmp_path, "b", ["a2", "b1"]))
        assert (result.inserted, result.duplicates) == (1, 1)
        assert ws.store.event_ids.rebuilds == 1


def test_a_rolled_back_import_leaves_extra_hashes_that_cost_nothing_but_a_check(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _csv(tmp_path, "a", [f"a{k}" for k in range(25)])
    monkeypatch.setattr(sessions, "compute_sessions", _crash)
    with pytest.raises(RuntimeError):
        _import(ws, path)
    monkeypatch.undo()
    assert _stored(ws) == (0, 0) and ws.store.event_ids.size() == 25  # claimed, not stored
    result = _import(ws, path)
    assert (result.inserted, result.duplicates) == (25, 0)  # confirmed absent, stored
    assert _stored(ws) == (25, 25)


def test_a_claim_rolled_back_then_stored_with_an_earlier_time_is_still_found(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _csv(tmp_path, "a", ["a1", "a2"])
    monkeypatch.setattr(sessions, "compute_sessions", _crash)
    with pytest.raises(RuntimeError):
        _import(ws, path, NOW + timedelta(days=60))  # claimed at day 60, rolled back
    monkeypatch.undo()
    assert _import(ws, path, NOW).inserted == 2  # stored as received on day 0
    again = _import(ws, path, NOW + timedelta(days=90))
    assert (again.inserted, again.duplicates) == (0, 2)
    assert _stored(ws) == (2, 2)


def test_deleted_events_come_back_when_sent_again(ws: Workspace, tmp_path: Path) -> None:
    path = _csv(tmp_path, "a", ["a1", "a2", "a3"])
    _import(ws, path)
    ws.store.execute("DELETE FROM events WHERE event_id = 'a2'")  # e.g. retention
    result = _import(ws, path, NOW + timedelta(days=400))
    assert (result.inserted, result.duplicates) == (1, 2)
    assert _stored(ws) == (3, 3)


def test_an_in_memory_store_keeps_its_index_in_memory(tmp_path: Path) -> None:
    store = Store()
    assert store.event_ids.path is None
    with store.lock, store.transaction():
        claim = store.event_ids.claim(store, "SELECT 7::BIGINT AS h", NOW)
    assert claim.new == 1 and store.event_ids.size() == 1
    store.close()
    assert not list(tmp_path.iterdir())
