"""Shared fixtures: the real datasets folder and small project factories."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from microseg.store import Store

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests needing them skip with a reason when absent."""
    if not DATA.exists():
        pytest.skip(f"shared datasets not found at {DATA}")
    return DATA


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
