"""Allocator hygiene of the server (api/memory.py): malloc_trim really returns free heap pages,
the trimmer thread runs / times / stops, the DuckDB cap default, and serve() wires them."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from microseg.api import memory
from microseg.api import server as server_module
from microseg.api.settings import ApiSettings
from microseg.bench.soak_diag import mallinfo, rss_mib
from microseg.workspace import Workspace

GLIBC = memory.available()
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc malloc only (Linux)")


@needs_glibc
def test_malloc_trim_returns_fragmented_free_pages() -> None:
    """Planted fragmentation: 96 MiB of 4 KiB blocks, every 32nd kept so no free run reaches the
    top of the heap (glibc's own trimming only releases the top). RSS stays up after free();
    malloc_trim(0) gives the pages inside the heap back."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    memory.malloc_trim()  # start clean
    blocks = []
    for _ in range(96 * 256):
        p = libc.malloc(4096)
        libc.memset(p, 1, 4096)  # touch: resident
        blocks.append(p)
    kept = blocks[::32]
    for i, p in enumerate(blocks):
        if i % 32:
            libc.free(p)
    fragmented = rss_mib()
    assert memory.resident_mib() == pytest.approx(fragmented, abs=2)
    trimmer = memory.MallocTrimmer(3600)  # not started: one timed trim by hand
    assert trimmer.trim_once() is True
    trimmed = rss_mib()
    assert trimmer.stats.last_released_mib == pytest.approx(fragmented - trimmed, abs=2)
    for p in kept:
        libc.free(p)
    assert fragmented - trimmed > 48, (fragmented, trimmed)  # ~93 MiB were free inside


def test_trimmer_runs_times_and_stops() -> None:
    calls: list[int] = []
    ran = threading.Event()

    def fake_trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) >= 3:
            ran.set()
        return len(calls) % 2  # released every other time

    trimmer = memory.MallocTrimmer(0.01, trim=fake_trim)
    trimmer.start()
    assert ran.wait(5)
    trimmer.stop()
    assert not trimmer.is_alive()
    n = len(calls)
    assert n >= 3 and set(calls) == {0}
    stats = trimmer.stats.as_dict()
    assert stats["runs"] == n and stats["released"] == (n + 1) // 2
    assert isinstance(stats["released_mib"], float) and "durations" not in stats
    assert stats["max_ms"] >= stats["p50_ms"] >= 0 and stats["total_ms"] >= stats["max_ms"]
    with pytest.raises(ValueError):
        memory.MallocTrimmer(0)


def test_trimmer_stops_itself_when_trim_fails() -> None:
    def broken(pad: int) -> int:
        raise OSError("boom")

    trimmer = memory.MallocTrimmer(0.01, trim=broken)
    trimmer.start()
    trimmer.join(5)
    assert not trimmer.is_alive()
    assert trimmer.stats.runs == 0


def test_start_trimmer_registers_for_the_sampler() -> None:
    assert memory.start_trimmer(0) is None
    assert memory.trim_stats() is None
    trimmer = memory.start_trimmer(60)
    if not GLIBC:
        assert trimmer is None
        return
    try:
        assert trimmer is not None and trimmer.is_alive()
        assert trimmer.trim_once() in (True, False)
        stats = memory.trim_stats()
        assert stats is not None and stats["interval_s"] == 60 and stats["runs"] == 1
    finally:
        memory.stop_trimmer(trimmer)
    assert memory.trim_stats() is None and not trimmer.is_alive()


def test_arena_max() -> None:
    assert memory.set_arena_max(0) is False  # 0: leave glibc's default
    # glibc's own default (8 per core), so the test process is unchanged
    assert memory.set_arena_max(8 * (os.cpu_count() or 1)) is GLIBC


_MAPPED_TWICE = """
import ctypes, sys
from microseg.api import memory
from microseg.bench.soak_diag import mallinfo
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
memory.set_mmap_threshold(int(sys.argv[1]))
mapped = []
for _ in range(2):
    before = mallinfo()["mmapped"]
    block = libc.malloc(4 * memory.MIB)
    mapped.append(mallinfo()["mmapped"] - before >= 4)
    libc.free(block)
print(mapped)
"""


@needs_glibc
@pytest.mark.skipif(mallinfo() is None, reason="glibc without mallinfo2")
@pytest.mark.parametrize(
    ("threshold", "expected"), [(0, "[True, False]"), (256 * 1024, "[True, True]")]
)
def test_a_fixed_mmap_threshold_maps_large_blocks_every_time(threshold: int, expected: str) -> None:
    """glibc's sliding threshold rises to 4 MiB once a mapped 4 MiB block is freed, so the next
    one comes from the heap (where it stays resident and fragments it once freed); fixed at
    256 KiB, every 4 MiB block is mapped on its own. Fresh processes: the threshold is global."""
    assert memory.set_mmap_threshold(0) is False  # 0: leave glibc's default
    done = subprocess.run(
        [sys.executable, "-c", _MAPPED_TWICE, str(threshold)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == expected


def test_serve_fixes_the_mmap_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "proj"
    Workspace.init(root, "mmap").close()
    seen: dict[str, Any] = {}
    _fake_server(seen, monkeypatch)
    applied: list[int] = []
    monkeypatch.setattr(memory, "set_mmap_threshold", applied.append)
    settings = ApiSettings(dev=True, realtime=False, malloc_mmap_threshold=1024 * 1024)
    server_module.serve(root, settings=settings, log_level="warning")
    assert applied == [1024 * 1024]
    assert ApiSettings().malloc_mmap_threshold == 256 * 1024


@pytest.mark.parametrize(
    ("total_mib", "expected"),
    [(1024, "512MiB"), (4096, "1024MiB"), (6000, "1500MiB"), (65536, "2048MiB")],
)
def test_default_store_memory_limit(total_mib: int, expected: str) -> None:
    assert memory.default_store_memory_limit(total_mib * memory.MIB) == expected


def test_default_store_memory_limit_of_this_machine() -> None:
    total = memory.physical_memory()
    assert total is None or total > 0
    mib = int(memory.default_store_memory_limit().removesuffix("MiB"))
    assert memory.STORE_LIMIT_MIN_MIB <= mib <= memory.STORE_LIMIT_MAX_MIB


def _fake_server(seen: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """serve() without uvicorn: record the store's cap and the trimmer while 'running'."""
    real_create_app = server_module.create_app

    def create_app(workspace: Workspace, settings: Any = None, **kwargs: Any) -> Any:
        seen["workspace"] = workspace
        return real_create_app(workspace, settings, **kwargs)

    def run(self: Any) -> None:
        ws = seen["workspace"]
        seen["limit"] = ws.store.scalar("SELECT current_setting('memory_limit')")
        seen["trim"] = memory.trim_stats()
        ws.close()

    monkeypatch.setattr(server_module, "create_app", create_app)
    monkeypatch.setattr(server_module.uvicorn.Server, "run", run)


def test_serve_caps_duckdb_and_trims_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "proj"
    Workspace.init(root, "mem").close()
    seen: dict[str, Any] = {}
    _fake_server(seen, monkeypatch)
    monkeypatch.setattr(memory, "physical_memory", lambda: 4096 * memory.MIB)
    server_module.serve(root, settings=ApiSettings(dev=True, realtime=False), log_level="warning")
    assert seen["limit"] in ("1.0 GiB", "1024.0 MiB")  # a quarter of the (faked) 4 GiB
    if GLIBC:
        assert seen["trim"] is not None and seen["trim"]["interval_s"] == 30.0
    assert memory.trim_stats() is None  # stopped when the server returns

    seen.clear()
    _fake_server(seen, monkeypatch)
    settings = ApiSettings(
        dev=True, realtime=False, store_memory_limit="300MB", malloc_trim_seconds=0
    )
    server_module.serve(root, settings=settings, log_level="warning")
    assert seen["limit"] in ("286.1 MiB", "300.0 MB")  # explicit setting wins
    assert seen["trim"] is None  # 0: no trimmer
