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

Freezing alone left ~45 full collections a minute (137 ms on average) in a soak: the
importer builds sqlglot trees (parent links make every one a reference cycle), ~14,500
objects per spool segment, and they live long enough to be promoted to the oldest generation
before they die. So, unless ``auto_full`` is set, the policy also switches off Python's own
full collections (its periodic pass does them) and runs each import in :meth:`importing`: the
collector is paused for the import, so everything it allocates stays in the youngest
generation, and one young collection right after frees its trees without a full pass.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class GcPolicy:
    """Periodic freeze plus a rare full collection; call :meth:`tick` from a background thread."""

    def __init__(
        self,
        refreeze_seconds: float,
        full_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        auto_full: bool = True,
    ) -> None:
        self.refreeze_seconds = refreeze_seconds
        self.full_seconds = full_seconds
        self.auto_full = auto_full
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
        self.young_collections = 0
        self.young_ms_max = 0.0
        self.young_collected = 0

    def activate(self) -> None:
        """Freeze what is allocated now; without ``auto_full``, stop Python's full passes."""
        gc.freeze()
        if not self.auto_full and self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, _ = self._thresholds
            gc.set_threshold(young, middle, 2**31 - 1)  # never reached: only tick() collects all

    def deactivate(self) -> None:
        """Undo :meth:`activate` (thresholds back, heap unfrozen)."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None
        gc.unfreeze()

    @contextmanager
    def importing(self) -> Iterator[None]:
        """Run a block with the cyclic GC paused, then collect the youngest generation: the
        block's short-lived cycles are freed there instead of being promoted (no-op with
        ``auto_full``)."""
        if self.auto_full or not gc.isenabled():
            yield
            return
        gc.disable()
        try:
            yield
        finally:
            started = time.perf_counter()
            collected = gc.collect(0)
            gc.enable()
            took = 1000 * (time.perf_counter() - started)
            with self._lock:
                self.young_collections += 1
                self.young_collected += collected
                self.young_ms_max = max(self.young_ms_max, took)

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
            "import_collections": self.young_collections,
            "import_collection_max_ms": round(self.young_ms_max, 1),
            "import_cycles_collected": self.young_collected,
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
