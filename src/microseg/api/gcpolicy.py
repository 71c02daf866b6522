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
    ) -> None:
        self.refreeze_seconds = refreeze_seconds
        self.full_seconds = full_seconds
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._frozen_at = now
        self._full_at = now
        self.freezes = 0
        self.full_collections = 0
        self.full_ms_max = 0.0
        self.collected = 0

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
            "freezes": self.freezes,
            "full_collections": self.full_collections,
            "full_collection_max_ms": round(self.full_ms_max, 1),
            "cycles_collected": self.collected,
        }  # the frozen count is in GcPauses.stats


class GcPauses:
    """Stop-the-world pauses of Python's cyclic GC by generation (a ``gc.callbacks`` hook):
    while one runs, no request is served, so a full collection of a large heap shows up
    directly in the latency tail."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen, took = info["generation"], time.perf_counter() - self._started
        self.collections[gen] += 1
        self.total[gen] += took
        self.longest[gen] = max(self.longest[gen], took)

    def stats(self) -> dict[str, Any]:
        return {
            f"gen{g}": {
                "collections": self.collections[g],
                "total_ms": round(1000 * self.total[g], 1),
                "max_ms": round(1000 * self.longest[g], 1),
            }
            for g in range(3)
        } | {"frozen_objects": gc.get_freeze_count()}
