"""Opt-in memory diagnostics for a long-running API server (the soak benchmark).

With ``MICROSEG_DIAG=1`` in the server's environment, :func:`install_from_env` starts a daemon
thread that every ``MICROSEG_DIAG_SECONDS`` (default 30) appends one JSON line to
``MICROSEG_DIAG_FILE`` (default: stderr) with what is needed to tell where memory goes:

* process: RSS, thread count, asyncio task count;
* Python heap: ``sys.getallocatedblocks()``, GC object count, and with
  ``MICROSEG_DIAG_TRACEMALLOC=1`` tracemalloc's current/peak size and the top growth by
  file:line since the previous sample (tracemalloc slows the server and adds its own
  memory, so RSS is not representative in that mode; off by default);
* pymalloc: arenas (1 MiB each) and bytes in allocated / free blocks;
* native: glibc ``mallinfo2`` (arena, in-use, free, mmap'd), anonymous vs file-backed RSS
  (``smaps_rollup``), the pyarrow memory pool and DuckDB (``duckdb_memory()`` by tag,
  ``pragma database_size``);
* ``len()`` of every big in-memory structure of the server: serving state profiles / id keys,
  the real-time evaluator's profiles, retained events, heap, ``_due``, ``_next``,
  ``leaf_state``, members, the decision engine's rings / consent cache / profile fields, the
  rate limiter's buckets, the collector's counters and its spool's sealed segments.

The sampler only reads; structures are looked up by attribute name so a missing one is
reported as absent rather than failing. ``MICROSEG_DIAG_TRIM=1`` also calls glibc
``malloc_trim(0)`` after each sample (to test the fragmentation hypothesis).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger("microseg.bench.soak_diag")
ENV_ON = "MICROSEG_DIAG"
ENV_FILE = "MICROSEG_DIAG_FILE"
ENV_SECONDS = "MICROSEG_DIAG_SECONDS"
ENV_TRACEMALLOC = "MICROSEG_DIAG_TRACEMALLOC"
ENV_TRIM = "MICROSEG_DIAG_TRIM"
MIB = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def mallinfo() -> dict[str, float] | None:
    """glibc heap figures in MiB (None when not glibc >= 2.33).

    Every glibc arena is summed (one per thread that allocated, up to 8 per core unless
    MALLOC_ARENA_MAX): ``arena`` is what they hold from the OS, ``in_use`` what is allocated,
    ``free`` what is held but unused (fragmentation), ``mmapped`` large blocks served by mmap.
    Not included: pymalloc's own arenas (mmap'd), DuckDB's allocator, the pyarrow pool."""
    fn = getattr(_LIBC, "mallinfo2", None)
    if fn is None:
        return None
    fn.restype = _MallInfo2
    info = fn()
    return {
        "arena": info.arena / MIB,
        "in_use": info.uordblks / MIB,
        "free": info.fordblks / MIB,
        "mmapped": info.hblkhd / MIB,
        "releasable": info.keepcost / MIB,
    }


def malloc_trim() -> bool:
    """Ask glibc to give free heap pages back to the OS; True when something was released."""
    fn = getattr(_LIBC, "malloc_trim", None)
    return bool(fn(0)) if fn is not None else False


_STATS_LOCK = threading.Lock()
_PYMALLOC_KEYS = {
    "# arenas allocated current": "arenas",
    "# bytes in allocated blocks": "allocated_mib",
    "# bytes in available blocks": "available_mib",
}


def pymalloc() -> dict[str, float] | None:
    """pymalloc's arenas (1 MiB each on 3.10+; an arena returns to the OS only when every
    block in it is free, so allocated blocks can fall while its RSS does not) and the bytes
    in allocated / free blocks, parsed from ``sys._debugmallocstats()`` (written to fd 2,
    captured through a temporary file). None when unavailable."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return None
    import tempfile

    with _STATS_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = _PYMALLOC_KEYS.get(key.strip())
        if name is not None and name not in out:
            number = float(value.strip().replace(",", ""))
            out[name] = number if name == "arenas" else number / MIB
    return out or None


def smaps_rollup() -> dict[str, float]:
    """Anonymous vs file-backed resident memory in MiB (``/proc/self/smaps_rollup``).

    ``lazyfree``: pages freed with MADV_FREE (jemalloc's "muzzy" pages, e.g. DuckDB's) that
    still count in RSS until the kernel needs them."""
    out: dict[str, float] = {}
    try:
        lines = Path("/proc/self/smaps_rollup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, rest = line.partition(":")
        if key in {"Rss", "Anonymous", "Private_Dirty", "LazyFree"}:
            out[key.lower()] = int(rest.split()[0]) / 1024
    if "rss" in out and "anonymous" in out:
        out["file_backed"] = out["rss"] - out["anonymous"]
    return out


def rss_mib(pid: int | str = "self") -> float:
    """Resident set size in MiB (from /proc; NaN when unavailable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _size(obj: Any, *names: str) -> int | None:
    """len() of ``obj.name1.name2...`` (None when a link is missing)."""
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    try:
        return len(obj)
    except TypeError:
        return None


def structure_sizes(services: Any, bridge: Any) -> dict[str, Any]:
    """Sizes of the server's long-lived structures (see the module docstring)."""
    out: dict[str, Any] = {}
    state = getattr(services, "state", None)
    out["serving.profiles"] = _size(state, "_profiles")
    out["serving.id_keys"] = _size(state, "_ids")
    out["serving.subscribers"] = _size(state, "_subscribers")
    ev = getattr(bridge, "evaluator", None)
    if ev is not None:
        profiles: Mapping[str, Any] = getattr(ev, "profiles", {})
        out["rt.profiles"] = len(profiles)
        out["rt.events_kept"] = sum(
            len(evs) for data in list(profiles.values()) for evs in list(data.events.values())
        )
        out["rt.heap"] = _size(ev, "_heap")
        out["rt.due"] = _size(ev, "_due")
        out["rt.next"] = _size(ev, "_next")
        out["rt.leaf_state"] = _size(ev, "leaf_state")
        out["rt.members"] = {k: len(v) for k, v in getattr(ev, "members", {}).items()}
    out["rt.changes_applied"] = getattr(bridge, "changes_applied", None)
    engine = getattr(services, "decisions", None)
    if engine is not None:
        for attr, value in vars(engine).items():
            inner = getattr(value, "_rings", None) or getattr(value, "_latest", None)
            if isinstance(inner, dict):
                out[f"decisions.{attr}"] = len(inner)
            for cache in ("_hits", "_ctx", "_versions", "_pending"):
                n = _size(value, cache)
                if n is not None:
                    out[f"decisions.{attr}.{cache}"] = n
        out["decisions._pinned"] = _size(engine, "_pinned")
        out["decisions._chosen"] = _size(engine, "_chosen")
    out["limiter.buckets"] = _size(getattr(services, "limiter", None), "_buckets")
    collector = getattr(services, "collector", None)
    if collector is not None:
        out["collector"] = collector.stats()
        spool = collector.spool
        out["spool.sealed"] = _size(spool, "_sealed")
        current = getattr(spool, "_current", None)
        out["spool.current_ids"] = len(current.ids) if current is not None else 0
        out["spool.current_waiters"] = len(current.waiters) if current is not None else 0
    return out


def duckdb_figures(store: Any) -> dict[str, Any]:
    """DuckDB's own memory accounting (MiB by tag) and database size."""
    with store.lock:
        cur = store.con.cursor()
        try:
            tags = cur.execute(
                "SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory()"
            ).fetchall()
            size = cur.execute("PRAGMA database_size").fetchall()
            names = [d[0] for d in cur.description]
        finally:
            cur.close()
    by_tag = {t: round(m / MIB, 1) for t, m, _ in tags if m}
    db = dict(zip(names, size[0], strict=True)) if size else {}
    return {
        "memory_mib": round(sum(m for _, m, _ in tags) / MIB, 1),
        "temp_mib": round(sum(t for _, _, t in tags) / MIB, 1),
        "by_tag": by_tag,
        "memory_usage": db.get("memory_usage"),
        "memory_limit": db.get("memory_limit"),
        "database_size": db.get("database_size"),
        "wal_size": db.get("wal_size"),
    }


def _arrow_pool() -> dict[str, Any] | None:
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    pool = pa.default_memory_pool()
    return {
        "backend": pool.backend_name,
        "allocated_mib": pool.bytes_allocated() / MIB,
        "max_mib": pool.max_memory() / MIB if pool.max_memory() is not None else None,
    }


class Sampler:
    """Takes samples of a server's memory; :meth:`sample` is one JSON-able dict."""

    def __init__(
        self,
        services: Callable[[], Any],
        bridge: Callable[[], Any],
        store: Callable[[], Any],
        loop: Callable[[], asyncio.AbstractEventLoop | None] = lambda: None,
        *,
        top: int = 12,
        trim: bool = False,
    ) -> None:
        self._services, self._bridge, self._store, self._loop = services, bridge, store, loop
        self.top = top
        self.trim = trim
        self.started = time.monotonic()
        self._lines: dict[str, tuple[int, int]] | None = None

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t": round(time.monotonic() - self.started, 1),
            "rss_mib": rss_mib(),
            "threads": threading.active_count(),
            "py_blocks": sys.getallocatedblocks(),
            # gc.get_objects() would expose tuples other threads are still building (CPython
            # then raises SystemError in them: it killed the importer in a soak), so this is
            # the collector's per-generation counters, not a census of objects
            "gc_objects": sum(gc.get_count()),
        }
        loop = self._loop()
        if loop is not None:
            try:
                out["asyncio_tasks"] = len(asyncio.all_tasks(loop))
            except RuntimeError:  # the set changed while copying; next time
                out["asyncio_tasks"] = None
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            out["tracemalloc_mib"] = current / MIB
            out["tracemalloc_peak_mib"] = peak / MIB
            out["tracemalloc_growth"] = self._growth()
        out["malloc"] = mallinfo()
        out["pymalloc"] = pymalloc()
        out["smaps"] = smaps_rollup()
        out["arrow"] = _arrow_pool()
        store = self._store()
        if store is not None:
            try:
                out["duckdb"] = duckdb_figures(store)
            except Exception as exc:  # closed at shutdown, or busy: report, do not fail
                out["duckdb"] = {"error": str(exc)}
        services = self._services()
        if services is not None:
            out["sizes"] = structure_sizes(services, self._bridge())
        from microseg.api import memory  # the server's own trimmer, when it runs one

        out["server_trim"] = memory.trim_stats()
        keeper = services.cache_keeper if services is not None else None
        out["cache_keeper"] = keeper.as_dict() if keeper is not None else None
        if self.trim:
            out["malloc_trim_released"] = malloc_trim()
            out["rss_after_trim_mib"] = rss_mib()
        return out

    def _growth(self) -> list[str]:
        """Top lines by growth since the previous sample (by size on the first one).

        Only per-line totals are kept between samples: a kept ``Snapshot`` holds one Python
        object per traced block (untraced, so invisible here but hundreds of MiB of RSS)."""
        snap = tracemalloc.take_snapshot().filter_traces(
            (tracemalloc.Filter(False, tracemalloc.__file__),)
        )
        stats = snap.statistics("lineno")
        del snap
        current = {str(st.traceback[0]): (st.size, st.count) for st in stats}
        previous, self._lines = self._lines, current
        if previous is None:
            return [
                f"{line}: {size / MIB:.2f} MiB ({n})"
                for line, (size, n) in current_top(current, self.top)
            ]
        diffs = []
        for line in current.keys() | previous.keys():
            size, count = current.get(line, (0, 0))
            before_size, before_count = previous.get(line, (0, 0))
            diffs.append(
                (abs(size - before_size), line, size, size - before_size, count - before_count)
            )
        diffs.sort(reverse=True)
        return [
            f"{line}: {delta / MIB:+.2f} MiB -> {size / MIB:.2f} MiB ({dcount:+d})"
            for _, line, size, delta, dcount in diffs[: self.top]
        ]


def current_top(
    lines: Mapping[str, tuple[int, int]], top: int
) -> list[tuple[str, tuple[int, int]]]:
    """The ``top`` lines by size."""
    return sorted(lines.items(), key=lambda item: item[1][0], reverse=True)[:top]


class DiagThread(threading.Thread):
    """Appends one :class:`Sampler` sample as a JSON line to ``target`` (None: stderr) every
    ``every`` seconds, and a last one when stopped."""

    def __init__(self, sampler: Sampler, every: float, target: Path | None = None) -> None:
        super().__init__(name="microseg-soak-diag", daemon=True)
        self.sampler, self.every, self.target = sampler, every, target
        self.stopped = threading.Event()
        self.samples = 0

    def run(self) -> None:
        if self.target is None:
            self._loop(sys.stderr)
            return
        with self.target.open("a", encoding="utf-8") as out:
            self._loop(out)

    def _loop(self, out: TextIO) -> None:
        while not self.stopped.wait(self.every):
            self.write_sample(out)
        self.write_sample(out)

    def write_sample(self, out: TextIO) -> None:
        try:
            line = json.dumps(self.sampler.sample(), default=str)
        except Exception as exc:  # diagnostics must never take the server down
            log.exception("soak diagnostics sample failed")
            line = json.dumps({"error": repr(exc)})
        out.write(line + "\n")
        out.flush()
        self.samples += 1

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout)


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """True when ``MICROSEG_DIAG`` asks for diagnostics."""
    env = os.environ if env is None else env
    return env.get(ENV_ON, "").strip().lower() in {"1", "true", "yes", "on"}


def install_from_env(
    services: Callable[[], Any],
    bridge: Callable[[], Any],
    store: Callable[[], Any],
    loop: Callable[[], asyncio.AbstractEventLoop | None] = lambda: None,
    env: Mapping[str, str] | None = None,
) -> DiagThread | None:
    """Start the sampler thread when ``MICROSEG_DIAG=1``; None otherwise (see module doc)."""
    env = os.environ if env is None else env
    if not enabled(env):
        return None
    if env.get(ENV_TRACEMALLOC, "") == "1" and not tracemalloc.is_tracing():
        tracemalloc.start(1)
    every = float(env.get(ENV_SECONDS, "30"))
    target = env.get(ENV_FILE)
    sampler = Sampler(services, bridge, store, loop, trim=env.get(ENV_TRIM, "") == "1")
    thread = DiagThread(sampler, every, Path(target) if target else None)
    thread.start()
    return thread


def attach(app: Any, bridge: Any, store: Any, env: Mapping[str, str] | None = None) -> bool:
    """Run the sampler for the life of a FastAPI ``app`` when ``MICROSEG_DIAG=1``.

    Wraps the app's lifespan: the sampler starts once the services exist and writes its last
    sample before shutdown. Returns whether it was attached (False: diagnostics off, or
    already attached to this app). This is the one call a server needs (``api/server.py``:
    after ``create_app``)."""
    env = dict(os.environ if env is None else env)
    if not enabled(env) or getattr(app.state, "soak_diag_attached", False):
        return False
    app.state.soak_diag_attached = True  # once per app: a second sampler would double the cost
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        async with inner(a) as value:
            thread = install_from_env(
                lambda: getattr(app.state, "services", None),
                lambda: bridge,
                lambda: store,
                lambda: loop,
                env=env,
            )
            try:
                yield value
            finally:
                if thread is not None:
                    await asyncio.to_thread(thread.stop)

    app.router.lifespan_context = lifespan
    return True


# ------------------------------------------------------------------------------ analysis
def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points in MiB per minute (NaN under 3 points)."""
    import statistics

    points = [(t, v) for t, v in points if v == v]  # drop NaN
    if len(points) < 3 or len({t for t, _ in points}) < 2:
        return float("nan")
    return 60 * statistics.linear_regression([t for t, _ in points], [v for _, v in points]).slope


def plateau(points: list[tuple[float, float]], warmup: float) -> dict[str, float]:
    """What "flat" means for one series: value after warm-up, at the end, the slope after
    warm-up, over the last half of the post-warm-up period and over its last 10 minutes (a
    plateau shows late slopes near 0 even when the whole post-warm-up slope is still positive)."""
    after = [(t, v) for t, v in points if t >= warmup]
    if not after:
        nan = float("nan")
        return {
            "after_warmup": nan,
            "end": nan,
            "slope": nan,
            "last_half_slope": nan,
            "last_10min_slope": nan,
        }
    middle = (after[0][0] + after[-1][0]) / 2
    last_10 = max(after[0][0], after[-1][0] - 600)
    return {
        "after_warmup": round(after[0][1], 1),
        "end": round(after[-1][1], 1),
        "slope": round(slope_per_minute(after), 2),
        "last_half_slope": round(slope_per_minute([p for p in after if p[0] >= middle]), 2),
        "last_10min_slope": round(slope_per_minute([p for p in after if p[0] >= last_10]), 2),
    }


def _series(
    rows: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any]
) -> list[tuple[float, float]]:
    out = []
    for row in rows:
        try:
            value = get(row)
        except (KeyError, TypeError):
            continue
        if isinstance(value, int | float):
            out.append((float(row["t"]), float(value)))
    return out


def summarize(rows: list[dict[str, Any]], warmup: float) -> dict[str, Any]:
    """Plateau figures of every memory series in the diagnostics samples, plus the structure
    sizes at the first sample after warm-up and at the last one."""
    rows = [r for r in rows if "t" in r]
    series: dict[str, Callable[[dict[str, Any]], Any]] = {
        "rss_mib": lambda r: r["rss_mib"],
        "tracemalloc_mib": lambda r: r["tracemalloc_mib"],
        "py_blocks_k": lambda r: r["py_blocks"] / 1000,
        "gc_objects_k": lambda r: r["gc_objects"] / 1000,
        "malloc_in_use_mib": lambda r: r["malloc"]["in_use"],
        "malloc_free_mib": lambda r: r["malloc"]["free"],
        "malloc_mmapped_mib": lambda r: r["malloc"]["mmapped"],
        "pymalloc_arenas_mib": lambda r: r["pymalloc"]["arenas"],
        "pymalloc_allocated_mib": lambda r: r["pymalloc"]["allocated_mib"],
        "anonymous_mib": lambda r: r["smaps"]["anonymous"],
        "lazyfree_mib": lambda r: r["smaps"]["lazyfree"],
        "arrow_pool_mib": lambda r: r["arrow"]["allocated_mib"],
        "duckdb_memory_mib": lambda r: r["duckdb"]["memory_mib"],
        # what the server holds besides DuckDB's buffer cache (which is bounded by its cap)
        "rss_minus_duckdb_mib": lambda r: r["rss_mib"] - r["duckdb"]["memory_mib"],
    }
    out: dict[str, Any] = {}
    for name, get in series.items():
        points = _series(rows, get)
        if points:
            out[name] = plateau(points, warmup)
    after = [r for r in rows if r["t"] >= warmup and "sizes" in r]
    if after:
        out["sizes_after_warmup"] = after[0]["sizes"]
        out["sizes_end"] = after[-1]["sizes"]
        out["duckdb_end"] = after[-1].get("duckdb")
    return out


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a :class:`DiagThread` wrote (unparsable lines skipped)."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
