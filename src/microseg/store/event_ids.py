"""The event-id index: a hash of every stored event id, on disk beside the store.

An import must drop the events whose id is already stored (a client's retry, a spool segment
replayed after a crash, a file imported twice). Finding them in ``events`` means reading the
whole ``event_id`` column: its cost and the DuckDB cache it fills grow with the store (400 ms
and 200 MiB per 1,000-event batch at 10 M random ids). This index answers "which of these ids
may be stored?" with B-tree probes in SQLite instead, in a few milliseconds and a bounded page
cache, however large the store is.

It is a *superset* of the stored ids, never relied on to say that an id is stored:

* an import claims its ids here **before** the DuckDB transaction that stores them commits,
  so no stored id is ever missing (a rollback or a crash only leaves extra hashes);
* a claim that finds known hashes makes the import confirm them against ``events``, reading
  only the row groups received since the earliest of them was first claimed (``received_at``
  grows with the table, so DuckDB's zone maps skip everything older);
* hashes of deleted events (erasure, retention) stay and only cost such a confirmation.

It is checked against the store when first used: a missing file, another store's file, a
file behind the store (each import advances a generation on both sides, SQLite first) or a
file left open when the machine went down (writes are not synced; an application crash loses
nothing, an OS crash may) is rebuilt from ``events``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from microseg.store import sql as q

if TYPE_CHECKING:
    from microseg.store.duckdb_store import Store

log = logging.getLogger(__name__)

HASH_SHIFT = 65  # the top 63 bits of md5_number: a non-negative SQLite integer key
CHUNK = 250_000  # hashes per SQLite statement (bounds the JSON text and Python lists)
CHUNK_VECTORS = CHUNK // 2048  # the same in DuckDB result vectors
CONFIRM_MARGIN = timedelta(days=1)  # clock steps between a claim and the stored row
PAGE_CACHE_KIB = 4096
EPOCH = datetime(1970, 1, 1)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS seen (h INTEGER PRIMARY KEY, since INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_CLAIM = "INSERT OR IGNORE INTO seen (h, since) SELECT value, ? FROM json_each(?)"
_EARLIEST = "SELECT min(since) FROM seen WHERE h IN (SELECT value FROM json_each(?))"
_BACKDATE = "UPDATE seen SET since = ? WHERE h IN (SELECT value FROM json_each(?)) AND since > ?"
_FORGET = "DELETE FROM seen WHERE h IN (SELECT value FROM json_each(?))"
_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"


def id_hash(event_id: exp.Expr) -> exp.Expr:
    """The index key of an event id, as a DuckDB expression (stable: md5, not ``hash``)."""
    digest = q.func("md5_number", event_id)
    shifted = exp.BitwiseRightShift(this=digest, expression=q.lit(HASH_SHIFT))
    return exp.cast(shifted, "BIGINT")


def py_id_hash(event_id: str) -> int:
    """:func:`id_hash` computed in Python (same value)."""
    import hashlib

    digest = hashlib.md5(event_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest, "little") >> HASH_SHIFT


def epoch_seconds(at: datetime) -> int:
    """Whole seconds since 1970 of a naive UTC time."""
    return int((at - EPOCH).total_seconds())


def boot_id() -> str:
    """This boot of the machine (Linux); '' where unknown (then any unclean close rebuilds)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Claim:
    """One batch's ids claimed in the index: how many were new to it, how many it already
    held (perhaps stored), and from when to confirm those in ``events``."""

    new: int
    known: int
    confirm_since: datetime | None


class EventIdIndex:
    """The SQLite file ``path`` (in memory when ``None``) of one store's event-id hashes.

    Every call runs under the store's lock (the import holds it), so one connection serves
    all threads."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        try:
            self.con = self._connect()
        except sqlite3.DatabaseError as exc:  # a damaged file: replaced (and then rebuilt)
            log.warning("replacing the unreadable event-id index %s: %s", path, exc)
            self._remove_files()
            self.con = self._connect()
        self.generation = -1  # -1: not yet checked against the store
        self.rebuilds = 0

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            str(self.path) if self.path else ":memory:",
            isolation_level=None,
            check_same_thread=False,
        )
        if self.path is not None:
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = OFF")  # safe against application crashes
        con.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        for statement in _SCHEMA:
            con.execute(statement)
        return con

    def _remove_files(self) -> None:
        if self.path is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    # -- state ------------------------------------------------------------------------------
    def _meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.con.execute("SELECT key, value FROM meta")}

    def _write_meta(self, **values: str | int) -> None:
        self.con.executemany(_SET_META, [(k, str(v)) for k, v in values.items()])

    def ensure(self, store: Store) -> None:
        """Check the index against ``store`` once; rebuild it from ``events`` when it may
        lack a stored id. Call with the store's lock held."""
        if self.generation >= 0:
            return
        store_id, store_generation = _store_state(store)
        try:
            meta = self._meta()
            stale = _stale_reason(meta, store_id, store_generation)
        except sqlite3.DatabaseError as exc:  # a damaged file
            stale = f"unreadable ({exc})"
            self._reset()
        if stale:
            self.rebuild(store, store_id, store_generation, stale)
        else:
            self.generation = int(meta["generation"])
        self.con.execute("BEGIN")
        self._write_meta(open=1, boot_id=boot_id())
        self.con.execute("COMMIT")

    def rebuild(self, store: Store, store_id: str, generation: int, reason: str) -> None:
        """Replace the index by the hashes of the stored events."""
        log.info("rebuilding the event-id index %s: %s", self.path or "(in memory)", reason)
        self._reset()
        result = store.execute(q.cached(_stored_hashes))
        self.con.execute("BEGIN")
        while len(frame := result.fetch_df_chunk(CHUNK_VECTORS)):
            pairs = zip(frame["h"].tolist(), frame["since"].tolist(), strict=True)
            self.con.executemany("INSERT INTO seen (h, since) VALUES (?, ?)", pairs)
        self._write_meta(store_id=store_id, generation=generation)
        self.con.execute("COMMIT")
        self.generation = generation
        self.rebuilds += 1

    def _reset(self) -> None:
        """An empty index (a damaged file is replaced, not repaired)."""
        with contextlib.suppress(sqlite3.Error):
            self.con.close()
        self._remove_files()
        self.con = self._connect()
        self.con.execute("DELETE FROM seen")
        self.con.execute("DELETE FROM meta")

    # -- claims -----------------------------------------------------------------------------
    def claim(self, store: Store, hashes: exp.Expr | str, now: datetime) -> Claim:
        """Add the hashes ``hashes`` selects (one BIGINT column, distinct) as received at
        ``now``; then advance the generation here and in the store (inside the caller's
        transaction, so it commits with the events). Call with the store's lock held."""
        self.ensure(store)
        generation = self.generation + 1
        since = epoch_seconds(now)
        new = known = 0
        earliest: int | None = None
        column = store.execute(hashes).fetchnumpy()["h"]  # 8 bytes a row (no frames)
        self.con.execute("BEGIN")
        try:
            for start in range(0, len(column), CHUNK):
                chunk = column[start : start + CHUNK].tolist()
                text = json.dumps(chunk)
                self.con.execute(_CLAIM, (since, text))
                added = int(self.con.execute("SELECT changes()").fetchone()[0])
                new += added
                if added < len(chunk):  # some were claimed before: when, at the earliest?
                    known += len(chunk) - added
                    first = self.con.execute(_EARLIEST, (text,)).fetchone()[0]
                    earliest = first if earliest is None else min(earliest, first)
                    # a claim that was rolled back may be later than the row that gets
                    # stored (an import given an earlier ``now``): keep the earliest time
                    self.con.execute(_BACKDATE, (since, text, since))
            self._write_meta(generation=generation)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.generation = generation
        store.execute("UPDATE event_id_index SET generation = ?", [generation])
        confirm = None if earliest is None else EPOCH + timedelta(seconds=earliest)
        return Claim(new, known, None if confirm is None else confirm - CONFIRM_MARGIN)

    def forget(self, hashes: list[int]) -> None:
        """Drop the hashes of events deleted for good, after their deletion committed (an
        index that lacks a stored id would let a retry in; one with extra hashes cannot)."""
        if not hashes:
            return
        self.con.execute("BEGIN")
        for start in range(0, len(hashes), CHUNK):
            self.con.execute(_FORGET, (json.dumps(hashes[start : start + CHUNK]),))
        self.con.execute("COMMIT")

    def size(self) -> int:
        """How many hashes the index holds."""
        return int(self.con.execute("SELECT count(*) FROM seen").fetchone()[0])

    def close(self) -> None:
        """Mark the index closed cleanly and close it."""
        with contextlib.suppress(sqlite3.Error):
            if self.generation >= 0:
                self.con.execute("BEGIN")
                self._write_meta(open=0)
                self.con.execute("COMMIT")
            self.con.close()


def hashes_where(store: Store, where: exp.Expr, params: list[Any] | None = None) -> list[int]:
    """The hashes of the stored events matching ``where`` (before deleting them)."""
    select = exp.select(id_hash(q.col("event_id"))).distinct().from_(q.table("events")).where(where)
    return [int(r[0]) for r in store.rows(select, params)]


def _store_state(store: Store) -> tuple[str, int]:
    row = store.rows("SELECT store_id, generation FROM event_id_index")
    if not row:
        raise RuntimeError("event_id_index has no row (migration 14 not applied?)")
    return str(row[0][0]), int(row[0][1])


def _stale_reason(meta: dict[str, str], store_id: str, generation: int) -> str:
    """Why the index may lack a stored id ('' when it cannot)."""
    if meta.get("store_id") != store_id:
        return "new file" if "store_id" not in meta else "another store's file"
    if int(meta.get("generation", "-1")) < generation:
        return f"behind the store (generation {meta.get('generation')} < {generation})"
    if meta.get("open") == "1" and (not meta.get("boot_id") or meta["boot_id"] != boot_id()):
        return "left open when the machine went down"
    return ""


def _stored_hashes() -> exp.Expr:
    """Every stored id's hash with the first time it was received, in key order."""
    h = id_hash(q.col("event_id"))
    first = exp.cast(q.func("epoch", exp.Min(this=q.col("received_at"))), "BIGINT")
    return (
        exp.select(exp.alias_(h, "h", quoted=True), exp.alias_(first, "since", quoted=True))
        .from_(q.table("events"))
        .group_by(q.lit(1))
        .order_by(q.lit(1))
    )
