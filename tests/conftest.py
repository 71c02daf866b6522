"""Shared fixtures: the real datasets folder and small project factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from microseg.store import Store
from microseg.store.sql import render

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests needing them skip with a reason when absent."""
    if not DATA.exists():
        pytest.skip(f"shared datasets not found at {DATA}")
    return DATA


@pytest.fixture
def executed_sql(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement any Store runs through ``execute`` from now on, as SQL text (trees
    rendered); clear it to start recording afresh."""
    seen: list[str] = []
    execute = Store.execute

    def record(self: Store, query: Any, params: Any = None) -> Any:
        seen.append(query if isinstance(query, str) else render(query))
        return execute(self, query, params)

    monkeypatch.setattr(Store, "execute", record)
    return seen


@pytest.fixture
def cached_table_store(tmp_path: Path) -> Iterator[Callable[[int], Store]]:
    """Factory: an on-disk store (cap 512 MiB) whose table ``t`` of ``rows`` rows was just
    written, checkpointed and read, so its blocks sit in DuckDB's cache, clean (evictable
    without writing). Closed at the end of the test."""
    opened: list[Store] = []

    def make(rows: int) -> Store:
        store = Store(tmp_path / f"cached-{len(opened)}.duckdb", memory_limit="512MiB")
        opened.append(store)
        store.execute(
            "CREATE TABLE t AS SELECT range AS id, random() AS v, md5(range::VARCHAR) AS h"
            f" FROM range({int(rows)})"
        )
        store.execute("CHECKPOINT")
        store.scalar("SELECT sum(v) + sum(length(h)) FROM t")
        return store

    yield make
    for store in opened:
        store.close()
