"""Keep the server's DuckDB buffer cache within a budget, below the store's memory cap.

DuckDB keeps every table block it has read or written until its memory limit forces it out.
A server that appends 2,000 events a second therefore grows by the size of what it writes
(~3.5 MiB a minute in the soak) until the cap (a quarter of RAM, up to 2 GiB), although it
never reads most of those blocks again. Lowering the cap would bound the cache but also the
working memory of the queries the server runs (segment recomputes, exports).

:class:`CacheKeeper` bounds the cache alone: every ``interval`` seconds it asks the store to
drop clean table blocks (:meth:`Store.evict_cache`) until DuckDB holds at most ``budget``
bytes, in steps of at most ``step`` bytes with the store's lock released in between, so an
import waits for one short step at most. Queries may still use memory up to the cap between
runs; what they leave cached above the budget is dropped at the next run.

What it cannot bound is what queries read again before the next run. Imports used to read
the whole ``event_id`` column (dedup) and the whole ``session_id`` column (sessions) each
time, a working set that grew with the store (~100 MiB between runs at 3.6 M events in a
30-minute soak); since the event-id index (:mod:`microseg.store.event_ids`) and the session
heads (:mod:`microseg.ingest.sessions`), an in-order import reads per-key tables instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from microseg.api.periodic import PeriodicThread
from microseg.store.duckdb_store import Store

log = logging.getLogger("microseg.api.cache_budget")

MIB = 1024 * 1024
DEFAULT_STEP = 8 * MIB
MAX_STEPS = 64  # per run: imports that refill the cache meanwhile cannot keep a run going


@dataclass
class KeeperStats:
    """What the keeper did: runs, steps that evicted, bytes dropped, longest step."""

    runs: int = 0
    steps: int = 0
    evicted_mib: float = 0.0
    short_runs: int = 0  # the budget was not reached: the rest was pinned or not clean
    last_buffer_mib: float = 0.0
    max_step_ms: float = 0.0  # a step's hold of the store's lock (what an import may wait)
    total_ms: float = 0.0
    max_wait_ms: float = 0.0  # a step's wait for that lock (an import holding it)
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("evicted_mib", "last_buffer_mib", "max_step_ms", "total_ms", "max_wait_ms"):
            out[key] = round(out[key], 2)
        return out


class CacheKeeper(PeriodicThread):
    """Daemon thread: every ``interval`` seconds, evict the store's cache down to ``budget``."""

    def __init__(
        self, store: Store, budget: int, interval: float, step: int = DEFAULT_STEP
    ) -> None:
        if budget < 0 or step <= 0:
            raise ValueError("budget must be >= 0 and step > 0")
        super().__init__("microseg-cache-keeper", interval)
        self.store = store
        self.budget = budget
        self.step = step
        self.stats = KeeperStats()

    def tick(self) -> int:
        return self.keep_once()

    def keep_once(self) -> int:
        """One run (also callable directly): bytes evicted; stops the keeper on a store error."""
        self.stats.runs += 1
        evicted = 0
        try:
            for _ in range(MAX_STEPS):
                if self.stopping:
                    break
                started = time.perf_counter()
                result = self.store.evict_cache(self.budget, self.step)
                held_ms = 1000 * result.held_seconds
                waited_ms = 1000 * (time.perf_counter() - started) - held_ms
                self.stats.max_wait_ms = max(self.stats.max_wait_ms, waited_ms)
                self.stats.last_buffer_mib = result.after / MIB
                if result.evicted == 0:
                    self.stats.short_runs += int(result.after > self.budget)
                    break
                evicted += result.evicted
                self.stats.steps += 1
                self.stats.total_ms += held_ms
                self.stats.max_step_ms = max(self.stats.max_step_ms, held_ms)
                if result.after <= self.budget:
                    break
        except Exception as exc:  # hygiene must never take the server down
            if self.stopping:  # the store closed under a run at shutdown
                return evicted
            log.exception("evicting DuckDB's cache failed; the cache keeper stops")
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self.halt()
        self.stats.evicted_mib += evicted / MIB
        return evicted

    def as_dict(self) -> dict[str, Any]:
        """Budget, interval and what the keeper did (JSON-able)."""
        return {
            "budget_mib": round(self.budget / MIB, 1),
            "interval_s": self.interval,
            **self.stats.as_dict(),
        }


def start_keeper(store: Store, budget: int | None, interval: float) -> CacheKeeper | None:
    """Start a keeper for ``store`` (None when there is no budget, ``interval <= 0`` or the
    store is in memory: its blocks are not on disk, so none is clean). The app keeps it in
    ``Services.cache_keeper``."""
    if budget is None or interval <= 0 or store.path is None:
        return None
    keeper = CacheKeeper(store, budget, interval)
    keeper.start()
    return keeper


def stop_keeper(keeper: CacheKeeper | None) -> None:
    """Stop a keeper started by :func:`start_keeper` (None: nothing to do)."""
    if keeper is not None:
        keeper.stop()
