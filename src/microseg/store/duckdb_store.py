"""The embedded DuckDB store: connection, migrations, typed helpers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from sqlglot import exp

from microseg.errors import ConfigError
from microseg.store import sql
from microseg.store.event_ids import EventIdIndex
from microseg.store.schema import MIGRATIONS

Params = Sequence[Any] | dict[str, Any] | None


def utcnow() -> datetime:
    """Current UTC time as a naive datetime (the store keeps naive UTC timestamps)."""
    return datetime.now(UTC).replace(tzinfo=None)


def naive_utc(value: datetime) -> datetime:
    """An aware time converted to naive UTC; a naive time is taken as UTC already."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


CLEAN_MARGIN = 1024 * 1024  # bytes of reported clean blocks evict_cache leaves alone


@dataclass(frozen=True)
class CacheEviction:
    """One :meth:`Store.evict_cache`: buffer bytes before and after, and whether the budget
    was reached."""

    before: int
    after: int
    reached: bool
    held_seconds: float = 0.0  # how long the store's lock was held for it

    @property
    def evicted(self) -> int:
        return max(0, self.before - self.after)


def _set_memory_limit(value: str) -> exp.Set:
    """``SET memory_limit = '<value>'`` as a tree."""
    item = exp.EQ(this=exp.column("memory_limit"), expression=exp.Literal.string(value))
    return exp.Set(expressions=[exp.SetItem(this=item)])


class Store:
    """A DuckDB database file (or in-memory database) holding everything microseg keeps."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        memory_limit: str | None = None,
        threads: int | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = None if path is None or str(path) == ":memory:" else Path(path)
        self.memory_limit = memory_limit  # the cap as configured (None: DuckDB's default)
        if self.path is not None and not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {}
        if memory_limit:
            config["memory_limit"] = memory_limit
        if threads:
            config["threads"] = threads
        try:
            self.con = duckdb.connect(
                str(self.path) if self.path else ":memory:", read_only=read_only, config=config
            )
        except duckdb.IOException as exc:
            raise ConfigError(f"cannot open store {self.path}: {exc}") from None
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")  # ours are Rich bars, not stdout
        self.lock = threading.RLock()
        self._event_ids: EventIdIndex | None = None
        if not read_only:
            self.migrate()

    # -- schema ---------------------------------------------------------------------------
    def version(self) -> int:
        exists = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()
        if not exists or not exists[0]:
            return 0
        row = self.con.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""
        with self.lock:
            self.con.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
            )
            done = {
                int(r[0])
                for r in self.con.execute("SELECT version FROM schema_migrations").fetchall()
            }
            applied = []
            for mig in sorted(MIGRATIONS, key=lambda m: m.version):
                if mig.version in done:
                    continue
                with self.transaction():
                    for stmt in mig.statements:
                        self.con.execute(stmt)
                    self.con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        [mig.version, mig.name, utcnow()],
                    )
                applied.append(mig.version)
            return applied

    def columns(self, table: str) -> dict[str, str]:
        rows = self.con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        ).fetchall()
        return {name: dtype for name, dtype in rows}

    def ensure_columns(self, table: str, wanted: dict[str, str]) -> list[str]:
        """Add missing columns (name -> base type) to a table; returns the names added."""
        have = self.columns(table)
        added = []
        for name, base in wanted.items():
            if name in have:
                continue
            stmt = exp.Alter(
                this=sql.table(table),
                kind="TABLE",
                actions=[exp.ColumnDef(this=sql.ident(name), kind=sql.dtype(base))],
            )
            self.con.execute(sql.render(stmt))
            added.append(name)
        return added

    # -- execution --------------------------------------------------------------------------
    def lock_held_here(self) -> bool:
        """Whether the calling thread holds :attr:`lock` (work handed to another thread that
        needs the store would wait for it, while this thread waits for that work)."""
        return bool(self.lock._is_owned())  # type: ignore[attr-defined]

    def buffer_bytes(self) -> int:
        """Bytes DuckDB's buffer manager holds now: cached table and index blocks, temporary
        tables and query working memory (``duckdb_memory()``)."""
        return int(self.scalar("SELECT COALESCE(SUM(memory_usage_bytes), 0) FROM duckdb_memory()"))

    def clean_block_bytes(self) -> int:
        """Bytes of table and index blocks DuckDB could drop without writing anything: the
        unpinned blocks of its first eviction queue (already on disk), each one block in size."""
        live = self.scalar(
            "SELECT COALESCE(SUM(greatest(approximate_size - dead_nodes, 0)), 0)"
            " FROM duckdb_eviction_queues() WHERE queue_type = 'BLOCK_AND_EXTERNAL_FILE'"
        )
        size = self.scalar("SELECT current_setting('default_block_size')")
        return int(live) * int(size)

    def evict_cache(self, budget: int, step: int | None = None) -> CacheEviction:
        """Drop cached table blocks until DuckDB holds at most ``budget`` bytes; the cap stays.

        DuckDB keeps every block it read or wrote until its memory limit forces eviction, so
        the process of a store that grows grows with it, up to the cap. This lowers the limit
        just far enough to drop clean blocks (on disk already; DuckDB evicts them before any
        other kind) and then restores the cap. It never goes below what is not clean, so
        temporary tables and unsaved data are not written to disk to meet the budget: the
        budget is then not reached (``reached`` False). ``step`` bounds what one call drops, so
        the lock is held briefly. Holds :attr:`lock` throughout, so no query on this store runs
        under the lowered limit."""
        with self.lock:
            started = time.perf_counter()
            before = self.buffer_bytes()
            if before <= budget:
                return CacheEviction(before, before, True, time.perf_counter() - started)
            # the queue's count is approximate: stop a few blocks short of what it reports
            target = max(budget, before - self.clean_block_bytes() + CLEAN_MARGIN)
            if step is not None:
                target = max(target, before - step)
            if target >= before:
                return CacheEviction(before, before, False, time.perf_counter() - started)
            try:
                self.con.execute(sql.render(_set_memory_limit(f"{target}B")))
            except duckdb.OutOfMemoryException:  # pinned since measured: partial eviction
                pass
            finally:  # the configured cap, or DuckDB's exact default
                if self.memory_limit:
                    self.con.execute(sql.render(_set_memory_limit(self.memory_limit)))
                else:
                    self.con.execute("RESET memory_limit")
            after = self.buffer_bytes()
            return CacheEviction(before, after, after <= budget, time.perf_counter() - started)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            else:
                self.con.execute("COMMIT")

    def execute(self, query: exp.Expr | str, params: Params = None) -> duckdb.DuckDBPyConnection:
        """Run a statement. ``query`` is a sqlglot tree or a fixed string from this code base."""
        text = sql.render(query) if isinstance(query, exp.Expr) else query
        with self.lock:
            return self.con.execute(text, params or [])

    def df(self, query: exp.Expr | str, params: Params = None) -> pd.DataFrame:
        with self.lock:
            return self.execute(query, params).df()

    def rows(self, query: exp.Expr | str, params: Params = None) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.execute(query, params).fetchall()

    def scalar(self, query: exp.Expr | str, params: Params = None) -> Any:
        with self.lock:
            row = self.execute(query, params).fetchone()
        return row[0] if row else None

    def table_exists(self, name: str) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
            )
        )

    def audit(
        self, actor: str, action: str, target: str | None = None, details: Any = None
    ) -> None:
        """Append one line to the audit log."""
        import json

        self.execute(
            "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)",
            [
                utcnow(),
                actor,
                action,
                target,
                json.dumps(details, default=str) if details else None,
            ],
        )

    @property
    def event_ids(self) -> EventIdIndex:
        """The index of stored event ids (``<store file>.event-ids``; in memory for an
        in-memory store), opened on first use."""
        with self.lock:
            if self._event_ids is None:
                path = (
                    None
                    if self.path is None
                    else self.path.with_name(self.path.name + ".event-ids")
                )
                self._event_ids = EventIdIndex(path)
            return self._event_ids

    def close(self) -> None:
        with self.lock:
            if self._event_ids is not None:
                self._event_ids.close()
                self._event_ids = None
        self.con.close()
