"""Allocator hygiene for the long-running API server (glibc malloc; a no-op elsewhere).

A server that handles a steady stream of requests frees as much as it allocates, yet its RSS
creeps up: glibc keeps freed chunks inside its heaps (only the very top of a heap is given back
automatically), so a heap that once held a transient peak (a request body, an import's rows)
keeps those pages resident as "free" memory, and every thread that allocated gets its own
arena (up to 8 per core), each fragmenting separately. Three remedies, each measured in the
2,000 ev/s soak (``benchmarks/bench_soak.py``); the trimmer and the fixed mmap threshold are on
by default (an arena cap of 2 cost latency: p99 24 ms against 13-14 ms):

* :class:`MallocTrimmer`: a daemon thread calling glibc ``malloc_trim(0)`` every N seconds,
  which returns the free pages *inside* the heaps (``madvise(MADV_DONTNEED)``) to the kernel.
  The call runs without the GIL (ctypes releases it) but holds each arena's lock while it walks
  that arena's free chunks, so every call is timed (``TrimStats``) to show it does not hurt the
  request path;
* :func:`set_arena_max`: ``mallopt(M_ARENA_MAX, n)``, applied at server start before the
  server's threads exist (arenas are created lazily, on contention);
* :func:`set_mmap_threshold`: ``mallopt(M_MMAP_THRESHOLD, n)``, a fixed threshold above which
  blocks are mapped on their own and unmapped when freed (glibc's sliding one moves large
  transient buffers into the heap, where they fragment it).

Everything returns False / None where glibc is not the allocator (macOS, musl, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from microseg.api.periodic import PeriodicThread
from microseg.api.settings import SIZE_PATTERN

log = logging.getLogger("microseg.api.memory")

M_ARENA_MAX = -8  # glibc malloc.h
M_MMAP_THRESHOLD = -3


def _load_glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:  # pragma: no cover - glibc without a loadable libc.so is not a thing
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # pragma: no cover
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


_GLIBC = _load_glibc()


def available() -> bool:
    """True when the process allocates with glibc malloc (the only allocator handled here)."""
    return _GLIBC is not None


def malloc_trim(pad: int = 0) -> bool:
    """glibc ``malloc_trim(pad)``: give free heap pages back to the OS (True: some were).

    False without glibc. Runs without the GIL."""
    if _GLIBC is None:
        return False
    return bool(_GLIBC.malloc_trim(pad))


def set_arena_max(arenas: int) -> bool:
    """glibc ``mallopt(M_ARENA_MAX, arenas)``; True when applied (False without glibc or for
    ``arenas < 1``). Only arenas created afterwards are limited: call it before threads start."""
    if _GLIBC is None or arenas < 1:
        return False
    return bool(_GLIBC.mallopt(M_ARENA_MAX, arenas))


def set_mmap_threshold(size: int) -> bool:
    """glibc ``mallopt(M_MMAP_THRESHOLD, size)``: blocks of at least ``size`` bytes get their own
    mapping, returned to the OS when freed; True when applied (False without glibc, or for
    ``size < 1``: glibc's default).

    glibc's default starts at 128 KiB and rises to the size of each mapped block that is
    freed (up to 32 MiB), after which blocks that size are carved from the heap instead, where
    they stay resident and fragment it once freed. Setting it fixes the threshold."""
    if _GLIBC is None or size < 1:
        return False
    return bool(_GLIBC.mallopt(M_MMAP_THRESHOLD, size))


@dataclass
class TrimStats:
    """What the trimmer did: calls, how many released memory, and how long they took."""

    runs: int = 0
    released: int = 0
    released_mib: float = 0.0  # RSS before minus after, summed (other threads move it too)
    last_released_mib: float = 0.0
    total_seconds: float = 0.0
    max_seconds: float = 0.0
    last_seconds: float = 0.0
    durations: list[float] = field(default_factory=list, repr=False)  # last 256 (ring)

    def record(self, seconds: float, released: bool, rss_drop_mib: float = 0.0) -> None:
        self.runs += 1
        self.released += int(released)
        self.released_mib += rss_drop_mib
        self.last_released_mib = rss_drop_mib
        self.total_seconds += seconds
        self.last_seconds = seconds
        self.max_seconds = max(self.max_seconds, seconds)
        if len(self.durations) >= 256:
            del self.durations[0]
        self.durations.append(seconds)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able figures (milliseconds), without the duration ring."""
        out = asdict(self)
        ring = sorted(out.pop("durations"))
        for key in ("total_seconds", "max_seconds", "last_seconds"):
            out[key.replace("seconds", "ms")] = round(1000 * out.pop(key), 3)
        for key in ("released_mib", "last_released_mib"):
            out[key] = round(out[key], 2)
        out["p50_ms"] = round(1000 * ring[len(ring) // 2], 3) if ring else None
        return out


class MallocTrimmer(PeriodicThread):
    """Daemon thread: ``malloc_trim(0)`` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, interval: float, trim: Any = None) -> None:
        super().__init__("microseg-malloc-trim", interval)
        self._trim = trim or malloc_trim
        self.stats = TrimStats()

    def tick(self) -> bool:
        return self.trim_once()

    def trim_once(self) -> bool:
        """One timed trim (also callable directly)."""
        before = resident_mib()
        started = time.perf_counter()
        try:
            released = bool(self._trim(0))
        except Exception:  # hygiene must never take the server down
            log.exception("malloc_trim failed; the trimmer stops")
            self.halt()
            return False
        elapsed = time.perf_counter() - started
        self.stats.record(elapsed, released, before - resident_mib())
        return released


_PAGE_MIB = (os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096) / (1024 * 1024)


def resident_mib() -> float:
    """This process's resident memory in MiB (``/proc/self/statm``; 0.0 where absent)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE_MIB
    except (OSError, ValueError, IndexError):
        return 0.0


_ACTIVE: MallocTrimmer | None = None


def start_trimmer(interval: float) -> MallocTrimmer | None:
    """Start the process's trimmer (None when ``interval <= 0`` or without glibc)."""
    global _ACTIVE
    if interval <= 0 or _GLIBC is None:
        return None
    trimmer = MallocTrimmer(interval)
    trimmer.start()
    _ACTIVE = trimmer
    return trimmer


def stop_trimmer(trimmer: MallocTrimmer | None) -> None:
    """Stop a trimmer started by :func:`start_trimmer` (None: nothing to do)."""
    global _ACTIVE
    if trimmer is None:
        return
    trimmer.stop()
    if _ACTIVE is trimmer:
        _ACTIVE = None


def trim_stats() -> dict[str, Any] | None:
    """The running trimmer's figures (None when none runs); read by the soak sampler."""
    trimmer = _ACTIVE
    if trimmer is None:
        return None
    return {"interval_s": trimmer.interval, **trimmer.stats.as_dict()}


MIB = 1024 * 1024
STORE_LIMIT_SHARE = 0.25  # of physical memory
STORE_LIMIT_MIN_MIB = 512
STORE_LIMIT_MAX_MIB = 2048


def physical_memory() -> int | None:
    """Physical memory in bytes (None when the platform does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS.update({"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40})
_SIZE = re.compile(SIZE_PATTERN)


def size_bytes(text: str) -> int:
    """Bytes of a size written as DuckDB reads it: ``32MiB``, ``1.5 GB`` (KB = 1000 bytes,
    KiB = 1024). ValueError for anything else."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 32MiB, 1GB)")
    return int(float(match[1]) * _UNITS[match[2]])


def default_store_memory_limit(total: int | None = None) -> str:
    """The server's DuckDB cap when ``store_memory_limit`` is not set: a quarter of physical
    memory, at least 512 MiB and at most 2 GiB (DuckDB's own default, 80% of RAM, lets the
    buffer cache of a growing store take most of the machine before it plateaus)."""
    total = physical_memory() if total is None else total
    share = STORE_LIMIT_MAX_MIB if total is None else int(total * STORE_LIMIT_SHARE) // MIB
    return f"{min(STORE_LIMIT_MAX_MIB, max(STORE_LIMIT_MIN_MIB, share))}MiB"
