"""Group-committed spool: one fsync covers every write made before it, a write is never
reported durable before an fsync that saw it, failures reach exactly the writes they covered,
and a sealed segment's file is never closed under a running fsync."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from microseg.api import spool as spool_mod
from microseg.api.spool import Spool, SpoolSyncError, Ticket


def lines_of(n: int, tag: str) -> tuple[list[bytes], list[str | None]]:
    ids: list[str | None] = [f"{tag}-{i}" for i in range(n)]
    return [b'{"event_id": "%s"}\n' % str(i).encode() for i in ids], ids


class SyncRecorder:
    """Wraps the real fdatasync: records (fd, file size) each time, optionally slow/failing."""

    def __init__(self, delay: float = 0.0, fail_on: Callable[[int], bool] | None = None) -> None:
        self.real = spool_mod._sync_data
        self.delay = delay
        self.fail_on = fail_on
        self.calls: list[tuple[int, int]] = []  # (inode, size seen by the fsync)
        self.lock = threading.Lock()

    def __call__(self, fd: int) -> None:
        st = os.fstat(fd)
        with self.lock:
            self.calls.append((st.st_ino, st.st_size))
            n = len(self.calls)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on(n):
            raise OSError(errno.EIO, "Input/output error")
        self.real(fd)


def test_concurrent_writers_share_fsyncs_and_every_ack_follows_an_fsync_that_saw_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = SyncRecorder(delay=0.01)
    monkeypatch.setattr(spool_mod, "_sync_data", recorder)
    spool = Spool(tmp_path, max_segment_events=1_000_000)
    uncovered: list[int] = []
    guard = threading.Lock()  # serialises the writes with the test's size reading

    def writer(w: int) -> None:
        for k in range(25):
            with guard:
                ticket = spool.write(*lines_of(3, f"w{w}-{k}"))
                st = os.stat(tmp_path / ticket.segment)  # ends with this write's bytes
            spool.sync(ticket)
            with recorder.lock:  # some fsync of this file saw the bytes before the ack
                if not any(i == st.st_ino and n >= st.st_size for i, n in recorder.calls):
                    uncovered.append(ticket.seq)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert uncovered == []
    # 200 writes; each round sleeps 10 ms, so concurrent writers must have shared rounds
    assert spool.synced_writes == 200
    assert spool.syncs == len(recorder.calls) < 100
    [segment] = spool.leftovers()
    data = segment.read_bytes()
    assert data.count(b"\n") == 600 and spool.backlog() == 600
    spool.close()


def test_a_write_is_durable_only_after_an_fsync_that_started_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write landing while an fsync runs is not covered by it: its sync waits for the next."""
    started, release = threading.Event(), threading.Event()
    real = spool_mod._sync_data
    sizes: list[int] = []

    def blocking(fd: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        if len(sizes) == 1:
            started.set()
            assert release.wait(10)
        real(fd)

    monkeypatch.setattr(spool_mod, "_sync_data", blocking)
    spool = Spool(tmp_path)
    first = spool.write(*lines_of(1, "a"))
    leader = threading.Thread(target=spool.sync, args=(first,))
    leader.start()
    assert started.wait(10)
    second = spool.write(*lines_of(1, "b"))
    done = threading.Event()

    def follow(ticket: Ticket) -> None:
        spool.sync(ticket)
        done.set()

    follower = threading.Thread(target=follow, args=(second,))
    follower.start()
    time.sleep(0.05)
    assert not done.is_set()  # waits: the running fsync started before its write
    release.set()
    leader.join(10)
    follower.join(10)
    assert done.is_set()
    size = (tmp_path / second.segment).stat().st_size
    assert sizes == [size // 2, size]  # second round saw both lines
    spool.close()


def test_a_failed_fsync_fails_exactly_the_writes_it_covered_and_rotates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = SyncRecorder(fail_on=lambda n: n == 2)
    monkeypatch.setattr(spool_mod, "_sync_data", recorder)
    spool = Spool(tmp_path)
    ok = spool.append(*lines_of(2, "ok"))  # round 1: fine
    bad = spool.write(*lines_of(2, "bad"))
    with pytest.raises(SpoolSyncError, match="Input/output error"):
        spool.sync(bad)  # round 2 fails
    with pytest.raises(SpoolSyncError):
        spool.sync(bad)  # asking again does not make it durable
    assert spool.sync_failures == 1
    after = spool.append(*lines_of(2, "after"))  # round 3, in a fresh file
    assert after.segment != bad.segment == ok.segment
    # the failed segment is sealed, still on disk with all its lines for the importer
    first = spool.take()
    assert first is not None and first.name == ok.segment and first.lines == 4
    assert first.fd is None  # closed: sealed and no fsync needs it
    assert (tmp_path / first.name).read_bytes().count(b"\n") == 4
    second = spool.take()
    assert second is not None and second.name == after.segment and second.lines == 2
    spool.close()


def test_a_segment_sealed_during_an_fsync_stays_open_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, release = threading.Event(), threading.Event()
    real = spool_mod._sync_data

    def blocking(fd: int) -> None:
        started.set()
        assert release.wait(10)
        real(fd)

    monkeypatch.setattr(spool_mod, "_sync_data", blocking)
    spool = Spool(tmp_path)
    ticket = spool.write(*lines_of(3, "x"))
    leader = threading.Thread(target=spool.sync, args=(ticket,))
    leader.start()
    assert started.wait(10)
    segment = spool.take()  # the importer seals it while its fsync runs
    assert segment is not None and segment.sealed and segment.fd is not None
    os.fstat(segment.fd)  # still this file's descriptor
    release.set()
    leader.join(10)
    assert segment.fd is None  # closed by the fsync's leader once done
    spool.close()


def test_new_segments_make_their_directory_entry_durable_before_the_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    synced_dirs: list[bool] = []

    def spy(fd: int) -> None:
        synced_dirs.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(spool_mod.os, "fsync", spy)
    spool = Spool(tmp_path, max_segment_events=2)
    spool.append(*lines_of(2, "a"))  # fills and seals the first segment
    spool.append(*lines_of(1, "b"))  # a second file
    spool.append(*lines_of(1, "c"))  # same file: no directory fsync
    assert synced_dirs.count(True) == 2
    assert len(spool.leftovers()) == 2
    spool.close()


def test_a_failed_write_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)
    spool.append(*lines_of(1, "before"))
    real_write = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 10:
            real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool_mod.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space"):
        spool.write(*lines_of(1, "torn"))
    monkeypatch.setattr(spool_mod.os, "write", real_write)
    spool.append(*lines_of(1, "after"))
    [path] = spool.leftovers()
    assert path.read_bytes() == b'{"event_id": "before-0"}\n{"event_id": "after-0"}\n'
    segment = spool.take()
    assert segment is not None and segment.ids == ["before-0", "after-0"]
    spool.close()


def test_without_fsync_nothing_is_synced_and_files_close_on_seal(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    spool.append(*lines_of(2, "a"))
    assert spool.syncs == 0
    segment = spool.take()
    assert segment is not None and segment.fd is None
    spool.close()
