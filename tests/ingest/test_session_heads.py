"""``session_heads``: each key's latest computed session, so in-order events read no history.

The reference is the store itself: importing the same events in one batch or in many (in
order, shuffled, with late events, repeats and source session ids) must give every event
the same session id, and after every batch ``session_heads`` must equal what the migration
would compute from ``events`` from scratch.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from test_sessions_import import settings

from microseg.ingest.pipeline import ImportResult, import_events
from microseg.store import Store
from microseg.store.schema import MIGRATIONS
from microseg.workspace import Workspace

NOW = datetime(2024, 6, 1)
START = datetime(2024, 5, 1, 8, 0)
BACKFILL = next(m for m in MIGRATIONS if m.version == 15).statements[1]
Row = tuple[str, str, datetime, str]  # event id, user, time, source session ('' = none)


def _write(tmp_path: Path, name: str, rows: list[Row]) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text(
        "event_id,event_type,timestamp,user_id,session_id\n"
        + "".join(f"{e},page_view,{t:%Y-%m-%d %H:%M:%S},{u},{s}\n" for e, u, t, s in rows)
    )
    return path


def _import(ws: Workspace, tmp_path: Path, name: str, rows: list[Row]) -> ImportResult:
    path = _write(tmp_path, name, rows)
    return import_events(ws.store, ws.settings, ws.keys, path, source_name=name, now=NOW)


def _heads(store: Store) -> list[tuple[object, ...]]:
    return sorted(store.rows("SELECT * FROM session_heads"))


def _recomputed(store: Store) -> list[tuple[object, ...]]:
    """The heads the migration computes from events."""
    store.execute("CREATE OR REPLACE TEMP TABLE _check_heads AS SELECT * FROM session_heads")
    store.execute("DELETE FROM _check_heads")
    store.execute(BACKFILL.replace("INSERT INTO session_heads", "INSERT INTO _check_heads", 1))
    return sorted(store.rows("SELECT * FROM _check_heads"))


def _events(seed: int, users: int = 12, per_user: int = 25) -> list[Row]:
    """Per user, a walk in time with gaps around the 30-minute timeout; some rows carry a
    source session id, some ids repeat."""
    rng = random.Random(seed)
    rows: list[Row] = []
    for u in range(users):
        t = START + timedelta(minutes=rng.randrange(0, 90))
        for k in range(per_user):
            t += timedelta(minutes=rng.choice([0, 1, 5, 12, 29, 30, 31, 44, 180]))
            given = f"web-{u}-{k // 5}" if rng.random() < 0.1 else ""
            rows.append((f"e{u}-{k}", f"u{u}", t, given))
    rows += rng.sample(rows, 6)  # retries of some events
    return rows


def _batches(rows: list[Row], seed: int, *, late: bool) -> list[list[Row]]:
    """Batches in time order, or (late) with a share of the events held back to later."""
    rng = random.Random(seed)
    ordered = sorted(rows, key=lambda r: r[2])
    if late:
        held = [r for r in ordered if rng.random() < 0.2]
        ordered = [r for r in ordered if r not in held] + held
    cuts = sorted(rng.sample(range(1, len(ordered)), 9))
    return [ordered[a:b] for a, b in zip([0, *cuts], [*cuts, len(ordered)], strict=True)]


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "late"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_give_the_sessions_of_one_import_and_heads_stay_exact(
    tmp_path: Path, seed: int, late: bool
) -> None:
    rows = _events(seed)
    with Workspace.ephemeral(settings(30)) as whole:
        _import(whole, tmp_path, "all", rows)
        expected = dict(whole.store.rows("SELECT event_id, session_id FROM events"))
        expected_heads = _heads(whole.store)
        assert expected_heads == _recomputed(whole.store)
    with Workspace.ephemeral(settings(30)) as ws:
        for k, batch in enumerate(_batches(rows, seed, late=late)):
            _import(ws, tmp_path, f"b{k}", batch)
            assert _heads(ws.store) == _recomputed(ws.store), f"after batch {k}"
        got = dict(ws.store.rows("SELECT event_id, session_id FROM events"))
        assert got == expected
        assert _heads(ws.store) == expected_heads
    computed = {s for s in expected.values() if s.startswith("ms-")}
    assert len(computed) > 12  # several sessions per user: the gaps split them


def test_in_order_batches_read_no_stored_event(tmp_path: Path, executed_sql: list[str]) -> None:
    seen = executed_sql
    rows = [(f"e{k}", f"u{k % 3}", START + timedelta(minutes=10 * k), "") for k in range(60)]
    with Workspace.ephemeral(settings(30)) as ws:
        seen.clear()
        for k in range(6):
            _import(ws, tmp_path, f"b{k}", rows[10 * k : 10 * k + 10])
        assert not [s for s in seen if "_ms_sess" in s and "FROM events e" in s]
        # each user's events are 30 minutes apart: one long session per user, continued
        assert ws.store.scalar("SELECT count(DISTINCT session_id) FROM events") == 3
        seen.clear()
        late = [("late1", "u0", START + timedelta(minutes=5), "")]
        _import(ws, tmp_path, "late", late)
        assert [s for s in seen if "_ms_sess" in s and "FROM events e" in s]
        assert _heads(ws.store) == _recomputed(ws.store)


def test_an_existing_store_gets_its_heads_on_migration(tmp_path: Path) -> None:
    rows = _events(7)
    Workspace.init(tmp_path / "proj", "heads").close()
    with Workspace.open(tmp_path / "proj") as ws:
        _import(ws, tmp_path, "a", rows[: len(rows) // 2])
        expected = _heads(ws.store)
        # the store as it was before migration 15
        ws.store.execute("DROP TABLE session_heads")
        ws.store.execute("DELETE FROM schema_migrations WHERE version = 15")
    with Workspace.open(tmp_path / "proj") as ws:
        assert _heads(ws.store) == expected
        _import(ws, tmp_path, "b", rows[len(rows) // 2 :])
        assert _heads(ws.store) == _recomputed(ws.store)


@pytest.mark.parametrize(
    ("at", "late_at", "sessions_after"),
    [
        ([-100, -90, -80, 0, 10, 20], 15, 2),  # inside the latest session: joins it
        ([0, 10, 20, 60, 70, 80], 40, 1),  # in the 40-minute gap: bridges the two sessions
        ([0, 10, 20, 40, 50, 60], 200, 2),  # after the latest event: opens its own session
    ],
    ids=["inside", "bridge", "after"],
)
def test_a_late_event_against_the_latest_session(
    tmp_path: Path, at: list[int], late_at: int, sessions_after: int
) -> None:
    rows = [(f"e{k}", "u1", START + timedelta(minutes=m), "") for k, m in enumerate(at)]
    late = [("late", "u1", START + timedelta(minutes=late_at), "")]
    with Workspace.ephemeral(settings(30)) as whole:
        _import(whole, tmp_path, "all", rows + late)
        expected = dict(whole.store.rows("SELECT event_id, session_id FROM events"))
    with Workspace.ephemeral(settings(30)) as ws:
        _import(ws, tmp_path, "first", rows)
        _import(ws, tmp_path, "late", late)
        assert dict(ws.store.rows("SELECT event_id, session_id FROM events")) == expected
        assert len(set(expected.values())) == sessions_after
        assert _heads(ws.store) == _recomputed(ws.store)
