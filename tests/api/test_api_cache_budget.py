"""The server's DuckDB cache keeper (api/cache_budget.py): it evicts clean table blocks down to
the budget in bounded steps, keeps the cap, reports what it did, stops on a store error, and
the app's lifespan starts and stops it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from microseg.api import cache_budget, memory
from microseg.api.app import create_app
from microseg.api.settings import ApiSettings
from microseg.store import Store
from microseg.workspace import Workspace

MIB = 1024 * 1024


@pytest.fixture
def store(cached_table_store: Callable[[int], Store]) -> Store:
    """An on-disk store holding ~30 MiB of freshly written and read table blocks."""
    return cached_table_store(2_000_000)


def test_one_run_evicts_to_the_budget_in_bounded_steps(store: Store) -> None:
    before = store.buffer_bytes()
    assert before > 16 * MIB
    keeper = cache_budget.CacheKeeper(store, budget=2 * MIB, interval=3600, step=4 * MIB)
    evicted = keeper.keep_once()
    after = store.buffer_bytes()
    assert after <= 2 * MIB and evicted == pytest.approx(before - after, abs=MIB)
    stats = keeper.stats.as_dict()
    # each step drops at most `step` (plus the block DuckDB was evicting when it got there)
    assert stats["steps"] >= (before - 2 * MIB) // (4 * MIB + 256 * 1024)
    assert stats["runs"] == 1 and stats["short_runs"] == 0 and stats["last_error"] is None
    assert stats["evicted_mib"] == pytest.approx(evicted / MIB, abs=0.01)
    assert stats["last_buffer_mib"] <= 2 and stats["max_step_ms"] > 0
    assert store.scalar("SELECT current_setting('memory_limit')") in ("512.0 MiB", "512 MiB")
    # nothing more to do: a second run evicts nothing and is not short
    assert keeper.keep_once() == 0 and keeper.stats.short_runs == 0


def test_a_run_that_cannot_reach_the_budget_counts_as_short(store: Store) -> None:
    store.execute("CREATE TEMP TABLE pinned AS SELECT range AS id FROM range(3000000)")
    keeper = cache_budget.CacheKeeper(store, budget=0, interval=3600)
    assert keeper.keep_once() > 0  # the clean blocks go
    assert keeper.stats.short_runs == 1  # the temporary table stays, and is not spilled
    assert store.scalar("SELECT sum(temporary_storage_bytes) FROM duckdb_memory()") == 0


def test_a_store_error_stops_the_keeper_with_the_reason(store: Store) -> None:
    keeper = cache_budget.CacheKeeper(store, budget=0, interval=3600)
    store.close()
    assert keeper.keep_once() == 0
    assert keeper.stats.last_error is not None and "closed" in keeper.stats.last_error.lower()
    keeper.start()  # stopped already: the thread ends at once
    keeper.join(5)
    assert not keeper.is_alive()


def test_the_thread_runs_on_its_interval_and_stops(store: Store) -> None:
    keeper = cache_budget.start_keeper(store, budget=MIB, interval=0.05)
    assert keeper is not None
    try:
        stats = keeper.as_dict()
        assert stats is not None and stats["budget_mib"] == 1.0 and stats["interval_s"] == 0.05
        keeper.join(0.5)  # let it run a few times
        assert keeper.stats.runs >= 2 and store.buffer_bytes() <= MIB
    finally:
        cache_budget.stop_keeper(keeper)
    assert not keeper.is_alive()


def test_no_keeper_without_an_interval_or_for_an_in_memory_store(store: Store) -> None:
    assert cache_budget.start_keeper(store, budget=MIB, interval=0) is None
    assert cache_budget.start_keeper(store, budget=None, interval=30) is None
    in_memory = Store()
    try:
        assert cache_budget.start_keeper(in_memory, budget=MIB, interval=30) is None
    finally:
        in_memory.close()
    with pytest.raises(ValueError):
        cache_budget.CacheKeeper(store, budget=MIB, interval=0)
    with pytest.raises(ValueError):
        cache_budget.CacheKeeper(store, budget=-1, interval=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("32MiB", 32 * MIB), ("1.5 GB", 1_500_000_000), ("512KB", 512_000), ("0MiB", 0)],
)
def test_size_bytes(text: str, expected: int) -> None:
    assert memory.size_bytes(text) == expected


@pytest.mark.parametrize("text", ["32", "MiB", "-1MiB", "1e3MB", "12 apples"])
def test_size_bytes_refuses_what_is_not_a_size(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        memory.size_bytes(text)


def test_the_budget_setting_is_a_size() -> None:
    assert ApiSettings().store_cache_budget == "32MiB"
    with pytest.raises(ValidationError):
        ApiSettings(store_cache_budget="lots")


def test_the_app_lifespan_starts_and_stops_the_keeper(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    Workspace.init(root, "keeper").close()
    ws = Workspace.open(root, actor="api")
    try:
        settings = ApiSettings(dev=True, realtime=False, store_cache_budget="1MiB")
        with TestClient(create_app(ws, settings)) as client:
            keeper = client.app.state.services.cache_keeper  # type: ignore[attr-defined]
            assert keeper is not None and keeper.is_alive()
            stats = keeper.as_dict()
            assert stats is not None and stats["budget_mib"] == 1.0
            assert stats["interval_s"] == 10.0
            shown = client.get("/v1/admin/stats", headers={"X-API-Key": "dev"}).json()
            assert shown["memory"]["cache_keeper"]["budget_mib"] == 1.0
        assert not keeper.is_alive()  # stopped by the lifespan
        off = ApiSettings(dev=True, realtime=False, store_cache_seconds=0)
        with TestClient(create_app(ws, off)) as client:
            assert client.app.state.services.cache_keeper is None  # type: ignore[attr-defined]
    finally:
        ws.close()


def test_waiting_for_the_lock_is_not_counted_as_holding_it(store: Store) -> None:
    """An import holding the store's lock delays the keeper; the keeper's own hold, which is
    what an import may have to wait for, is measured apart."""
    import threading

    held = threading.Event()

    def hold() -> None:
        with store.lock:
            held.set()
            threading.Event().wait(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    keeper = cache_budget.CacheKeeper(store, budget=MIB, interval=3600, step=64 * MIB)
    assert keeper.keep_once() > 0
    holder.join()
    assert keeper.stats.max_wait_ms >= 200
    assert 0 < keeper.stats.max_step_ms < keeper.stats.max_wait_ms
