"""Large Parquet files are imported range by range: same result as one pass, bounded memory."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from microseg.ingest.pipeline import import_events
from microseg.synth import generate_events
from microseg.workspace import Workspace


def _snapshot(ws: Workspace) -> list[tuple]:
    return ws.store.rows(
        "SELECT e.event_id, e.event_type, e.ts, e.session_id, i.profile_id FROM events e"
        " JOIN identities i USING (id_key) ORDER BY e.event_id"
    )


def test_chunked_import_equals_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    generate_events(path, 30_000, 800, seed=5, chunk_rows=4_000)
    table = pq.read_table(path)
    table = table.cast(
        pa.schema(
            pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
            for f in table.schema
        )
    )
    # a duplicate id in a later range, and a bad row (unknown event type) in the middle
    dup = table.slice(10, 1)
    bad = table.slice(20_000, 1).set_column(1, "event_type", pa.array(["teleported"]))
    bad = bad.set_column(0, "event_id", pa.array(["bad-1"]))
    pq.write_table(pa.concat_tables([table, dup, bad]), path, row_group_size=4_000)

    with Workspace.init(tmp_path / "one", "one") as one:
        whole = one.import_events(path)
        expected = _snapshot(one)
        quarantined_one = one.store.rows("SELECT row_number, reason FROM quarantine")
    with Workspace.init(tmp_path / "chunked", "chunked") as ws:
        chunked = import_events(
            ws.store, ws.settings, ws.keys, path, source_name=path.name, chunk_rows=7_000
        )
        assert _snapshot(ws) == expected  # same events, sessions and profiles
        assert ws.store.rows("SELECT row_number, reason FROM quarantine") == quarantined_one
        assert ws.store.scalar("SELECT count(*) FROM import_batches") == 5  # 30,002 rows / 7,000
    assert (
        (chunked.rows_read, chunked.inserted, chunked.duplicates, chunked.quarantined)
        == (
            whole.rows_read,
            whole.inserted,
            whole.duplicates,
            whole.quarantined,
        )
        == (30_002, 30_000, 1, 1)
    )
    assert chunked.reasons == whole.reasons
