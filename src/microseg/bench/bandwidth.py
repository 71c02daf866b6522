"""The memory-bandwidth floor: how fast this machine can stream bytes through one core."""

from __future__ import annotations

import time

import numpy as np


def read_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Best-of-``repeats`` bytes/s of summing a ``megabytes`` float64 array (a streaming read).

    A step that must read N bytes of decoded data cannot finish faster than N / this, so
    ``seconds / floor`` says how far a step is from the hardware limit."""
    values = np.ones(megabytes * 1024 * 1024 // 8, dtype=np.float64)
    values.sum()  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        values.sum()
        best = min(best, time.perf_counter() - began)
    return values.nbytes / best


def floor_seconds(nbytes: int, bandwidth: float) -> float:
    """The least time to stream ``nbytes`` once at ``bandwidth`` bytes/s."""
    return nbytes / bandwidth if bandwidth > 0 else float("nan")
