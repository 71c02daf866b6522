"""The stage statement is rendered once per file shape; per-import values stay per import."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from test_pipeline_validation import default_settings

from microseg.ingest import pipeline
from microseg.ingest.pipeline import ImportResult, StageStatements, import_events
from microseg.workspace import Workspace

HEADER = "event_type,timestamp,user_id,product_id\n"  # no event_id: ids are <source>:<row>


@pytest.fixture()
def ws() -> Iterator[Workspace]:
    w = Workspace.ephemeral(default_settings())
    yield w
    w.close()


@pytest.fixture()
def statements(monkeypatch: pytest.MonkeyPatch) -> StageStatements:
    fresh = StageStatements(size=4)
    monkeypatch.setattr(pipeline, "STAGE_STATEMENTS", fresh)
    return fresh


def csv(tmp_path: Path, name: str, rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_same_shape_reuses_the_statement_with_this_imports_source_and_clock(
    ws: Workspace, tmp_path: Path, statements: StageStatements
) -> None:
    row = "page_view,2024-06-01T12:30:00Z,u1,p1"  # 30 min after the first import's clock

    def run(name: str, source: str, now: datetime) -> ImportResult:
        path = csv(tmp_path, name, [row])
        return import_events(ws.store, ws.settings, ws.keys, path, source_name=source, now=now)

    first = run("a.csv", "alpha", datetime(2024, 6, 1, 12, 0))
    second = run("b.csv", "beta", datetime(2024, 6, 1, 13, 0))
    assert statements.hits == 1  # one render for both files
    # the first import's clock made the row a future event (skew 5 min), the second's did not
    assert first.quarantined == 1 and first.reasons == {"future_timestamp": 1}
    assert second.inserted == 1
    ids = [r[0] for r in ws.store.rows("SELECT event_id FROM events")]
    assert ids == ["beta:1"]  # generated from the second import's own source name
    # the events INSERT is reused too (sql.cached), with this import's time and source
    stored = ws.store.rows("SELECT source, received_at FROM events")
    assert stored == [("beta", datetime(2024, 6, 1, 13, 0))]
    future = ws.store.rows("SELECT source FROM quarantine WHERE reason = 'future_timestamp'")
    assert future == [("alpha",)]


def test_a_settings_change_or_another_shape_renders_anew(
    ws: Workspace, tmp_path: Path, statements: StageStatements
) -> None:
    now = datetime(2024, 6, 2)
    path = csv(tmp_path, "a.csv", ["page_view,2024-06-01T12:30:00Z,u1,p1"])
    import_events(ws.store, ws.settings, ws.keys, path, source_name="s1", now=now)
    ingest = ws.settings.ingest.model_copy(update={"max_future_skew_minutes": 0})
    changed = ws.settings.model_copy(update={"ingest": ingest})
    import_events(ws.store, changed, ws.keys, path, source_name="s2", now=now)
    other = tmp_path / "c.csv"
    other.write_text("event_type,timestamp,user_id\npage_view,2024-06-01T12:30:00Z,u2\n")
    import_events(ws.store, ws.settings, ws.keys, other, source_name="s3", now=now)
    assert statements.hits == 0
    assert ws.store.scalar("SELECT count(*) FROM events") == 3


def test_cache_is_bounded_and_a_cached_import_leaves_few_cycles(
    ws: Workspace, tmp_path: Path, statements: StageStatements
) -> None:
    now = datetime(2024, 6, 2)
    for k in range(6):  # six shapes through a cache of four
        cols = ",".join(f"c{j}" for j in range(k))
        path = tmp_path / f"s{k}.csv"
        path.write_text(
            f"event_type,timestamp,user_id{',' + cols if cols else ''}\n"
            f"page_view,2024-06-01T12:30:00Z,u{k}{',x' * k}\n"
        )
        import_events(ws.store, ws.settings, ws.keys, path, source_name=f"s{k}", now=now)
    assert len(statements._texts) == 4
    path = csv(tmp_path, "warm.csv", ["page_view,2024-06-01T12:30:00Z,u1,p1"])
    import_events(ws.store, ws.settings, ws.keys, path, source_name="w0", now=now)
    gc.collect()
    gc.disable()
    try:
        import_events(ws.store, ws.settings, ws.keys, path, source_name="w1", now=now)
        cyclic_garbage = gc.collect()
    finally:
        gc.enable()
    assert statements.hits >= 1
    # ~14,500 objects per import before the stage statement was cached (mostly sqlglot),
    # ~4,600 before the commit's statements were too (sql.cached); a few now
    assert cyclic_garbage < 200


def test_a_file_above_the_cache_size_gets_its_own_query_with_literals(
    ws: Workspace, tmp_path: Path, statements: StageStatements, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "CACHED_STAGE_MAX_BYTES", 0)
    rows = ["page_view,2024-06-01T12:30:00Z,u1,p1", "page_view,2024-06-01T11:00:00Z,u2,p1"]
    result = import_events(
        ws.store,
        ws.settings,
        ws.keys,
        csv(tmp_path, "big.csv", rows),
        source_name="big",
        now=datetime(2024, 6, 1, 12, 0),
    )
    assert statements.hits == 0 and not statements._texts  # nothing cached
    assert result.inserted == 1 and result.reasons == {"future_timestamp": 1}
    assert ws.store.rows("SELECT event_id FROM events") == [("big:2",)]
