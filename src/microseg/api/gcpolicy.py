"""Python's garbage collector in the server: keep full collections short, measure pauses.

Under load, CPython 3.11 runs a full (generation 2) collection whenever the objects promoted
since the last one exceed a quarter of the long-lived ones. The server holds millions of
long-lived objects (serving state, real-time evaluator) and the importer promotes many
short-lived ones, so every few seconds a stop-the-world pass over the whole heap took
0.2-0.5 s: the real-time latency tail. :class:`GcPolicy` moves the long-lived heap out of
those passes (``gc.freeze``) every ``refreeze_seconds``, so a full collection scans only what
was allocated since, and every ``full_seconds`` unfreezes and collects everything once, so
reference cycles that died while frozen are still reclaimed (memory stays bounded by what
one such period can strand). Objects freed by reference counting are freed at once either way.

Freezing alone left ~45 full collections a minute (137 ms on average) in a soak: each spool
import built ~14,500 objects of sqlglot trees (parent links make every one a reference cycle)
that lived long enough to be promoted before they died. Imports now reuse rendered statements
(:func:`microseg.store.sql.cached`) and leave almost no cycles. Unless ``auto_full`` is set,
the policy switches off Python's own middle and full collections: only young collections run
(every ``young_threshold`` net new objects), what survives one waits in the middle generation
until the next freeze, and the periodic full pass reclaims the cycles that died meanwhile.
Middle collections had scanned ~10 s of survivors at a time (events awaiting their import,
new profiles' state) for up to 80 ms each in a soak, while the periodic full passes show how
little garbage outlives a young collection: ~3,400 objects per 10 minutes.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any


class GcPolicy:
    """Periodic freeze plus a rare full collection; call :meth:`tick` from a background thread."""

    def __init__(
        self,
        refreeze_seconds: float,
        full_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        auto_full: bool = True,
        young_threshold: int = 0,
    ) -> None:
        self.refreeze_seconds = refreeze_seconds
        self.full_seconds = full_seconds
        self.auto_full = auto_full
        self.young_threshold = young_threshold
        self._thresholds: tuple[int, int, int] | None = None
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._frozen_at = now
        self._full_at = now
        self.freezes = 0
        self.full_collections = 0
        self.full_ms_max = 0.0
        self.collected = 0

    def activate(self) -> None:
        """Freeze what is allocated now; without ``auto_full``, stop Python's middle and full
        collections (only when :meth:`tick` will run full passes, else nothing would reclaim
        what survives a young collection); with ``young_threshold``, collect the youngest
        generation that much less often."""
        gc.freeze()
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, oldest = self._thresholds
            periodic_full = self.refreeze_seconds > 0 and self.full_seconds > 0
            if not self.auto_full and periodic_full:  # only young ones and tick()'s pass
                middle = oldest = 2**31 - 1
            gc.set_threshold(self.young_threshold or young, middle, oldest)

    def deactivate(self) -> None:
        """Undo :meth:`activate` (thresholds back, heap unfrozen)."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        gc.unfreeze()

    def tick(self) -> None:
        """Freeze or fully collect when their interval has passed (cheap otherwise)."""
        if self.refreeze_seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            if self.full_seconds > 0 and now - self._full_at >= self.full_seconds:
                started = time.perf_counter()
                gc.unfreeze()
                self.collected += gc.collect()
                gc.freeze()
                self.full_ms_max = max(self.full_ms_max, 1000 * (time.perf_counter() - started))
                self.full_collections += 1
                self._full_at = self._frozen_at = now
            elif now - self._frozen_at >= self.refreeze_seconds:
                gc.freeze()
                self.freezes += 1
                self._frozen_at = now

    def stats(self) -> dict[str, float | int]:
        """Counters for the admin stats."""
        return {
            "refreeze_seconds": self.refreeze_seconds,
            "full_seconds": self.full_seconds,
            "auto_full": self.auto_full,
            "freezes": self.freezes,
            "full_collections": self.full_collections,
            "full_collection_max_ms": round(self.full_ms_max, 1),
            "cycles_collected": self.collected,
        }  # the frozen count is in GcPauses.stats


class GcPauses:
    """Stop-the-world pauses of Python's cyclic GC by generation (a ``gc.callbacks`` hook):
    while one runs, no request is served, so a full collection of a large heap shows up
    directly in the latency tail. Pauses of at least ``slow_ms`` are also counted by the
    thread that ran them: a collection runs in whichever thread allocated past the threshold,
    and in a low-priority thread the scheduler can stall it while every thread waits."""

    def __init__(self, slow_ms: float = 10.0) -> None:
        self.collections = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]
        self.slow_ms = slow_ms
        self.slow_by_thread: dict[str, list[float]] = {}  # name -> [count, total ms, max ms]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen, took = info["generation"], time.perf_counter() - self._started
        self.collections[gen] += 1
        self.collected[gen] += info["collected"]
        self.total[gen] += took
        self.longest[gen] = max(self.longest[gen], took)
        if 1000 * took >= self.slow_ms:
            name = threading.current_thread().name.rstrip("0123456789_-") or "thread"
            slow = self.slow_by_thread.setdefault(name, [0, 0.0, 0.0])
            slow[0] += 1
            slow[1] += 1000 * took
            slow[2] = max(slow[2], 1000 * took)

    def stats(self) -> dict[str, Any]:
        return (
            {
                f"gen{g}": {
                    "collections": self.collections[g],
                    "total_ms": round(1000 * self.total[g], 1),
                    "max_ms": round(1000 * self.longest[g], 1),
                    "collected": self.collected[g],
                }
                for g in range(3)
            }
            | {"frozen_objects": gc.get_freeze_count()}
            | {
                f"slow_by_thread (>= {self.slow_ms:g} ms)": {
                    name: {"pauses": int(n), "total_ms": round(total, 1), "max_ms": round(top, 1)}
                    for name, (n, total, top) in sorted(self.slow_by_thread.items())
                }
            }
        )
