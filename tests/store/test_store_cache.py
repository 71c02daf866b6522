"""``Store.evict_cache``: drop clean cached table blocks down to a budget, keeping the cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from microseg.store import Store
from microseg.store.duckdb_store import _set_memory_limit
from microseg.store.sql import render

MIB = 1024 * 1024


@pytest.fixture
def cached(cached_table_store: Callable[[int], Store]) -> Store:
    """An on-disk store whose 1M-row table (~15 MiB of blocks) was just written and read."""
    return cached_table_store(1_000_000)


def _limit(store: Store) -> str:
    return str(store.scalar("SELECT current_setting('memory_limit')"))


def _spilled(store: Store) -> int:
    return int(store.scalar("SELECT sum(temporary_storage_bytes) FROM duckdb_memory()"))


def test_evicts_clean_blocks_down_to_the_budget_and_restores_the_cap(cached: Store) -> None:
    cap = _limit(cached)
    before = cached.buffer_bytes()
    assert before > 8 * MIB and cached.clean_block_bytes() > 8 * MIB
    result = cached.evict_cache(2 * MIB)
    assert result.reached and result.before == before
    assert result.after <= 2 * MIB and cached.buffer_bytes() <= 2 * MIB
    assert result.evicted == before - result.after
    assert _limit(cached) == cap  # the cap is back: queries may use it again
    assert _spilled(cached) == 0  # clean blocks are dropped, never written out
    # the data is intact, read back from the file
    assert cached.scalar("SELECT count(*), count(DISTINCT h) FROM t") == 1_000_000


def test_a_budget_above_what_is_held_changes_nothing(cached: Store) -> None:
    before = cached.buffer_bytes()
    result = cached.evict_cache(before + MIB)
    assert result.reached and result.evicted == 0 and cached.buffer_bytes() == before


def test_temporary_data_is_never_spilled_to_meet_the_budget(cached: Store) -> None:
    cached.execute(
        "CREATE TEMP TABLE scratch AS SELECT range AS id, random() AS v FROM range(2000000)"
    )
    temp = cached.buffer_bytes() - cached.clean_block_bytes()
    assert temp > 8 * MIB
    result = cached.evict_cache(MIB)
    assert not result.reached  # what is left is not clean: the budget is not met
    assert result.evicted > 0 and result.after >= temp - MIB
    assert _spilled(cached) == 0
    assert cached.scalar("SELECT count(*) FROM scratch") == 2_000_000


def test_an_in_memory_store_has_nothing_clean_to_drop() -> None:
    store = Store(memory_limit="256MiB")
    try:
        store.execute("CREATE TABLE t AS SELECT range AS id, random() AS v FROM range(500000)")
        before = store.buffer_bytes()
        assert before > 0 and store.clean_block_bytes() == 0
        result = store.evict_cache(0)
        assert not result.reached and result.evicted == 0
        assert _spilled(store) == 0 and store.scalar("SELECT count(*) FROM t") == 500_000
    finally:
        store.close()


def test_a_store_without_a_configured_cap_gets_its_default_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "nocap.duckdb")
    try:
        store.execute("CREATE TABLE t AS SELECT range AS id, random() AS v FROM range(1000000)")
        store.execute("CHECKPOINT")
        store.scalar("SELECT sum(v) FROM t")
        cap = _limit(store)
        assert store.evict_cache(0).evicted > 0
        assert _limit(store) == cap
    finally:
        store.close()


def test_the_limit_statement_is_a_quoted_literal() -> None:
    assert render(_set_memory_limit("32MB")) == "SET memory_limit = '32MB'"
    hostile = render(_set_memory_limit("1GB'; DROP TABLE t; --"))
    assert hostile == "SET memory_limit = '1GB''; DROP TABLE t; --'"
