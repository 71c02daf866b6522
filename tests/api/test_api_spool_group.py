"""The spool's writer thread: placing a request never waits for the disk, one round (write +
fsync) covers every write queued before it, a write is never reported durable before an
fsync that saw it, failures reach exactly the writes they covered, and a segment reaches the
importer only after its last round."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from microseg.api import spool as spool_mod
from microseg.api.spool import Segment, Spool, SpoolSyncError, Ticket


def lines_of(n: int, tag: str) -> tuple[list[bytes], list[str | None]]:
    ids: list[str | None] = [f"{tag}-{i}" for i in range(n)]
    return [b'{"event_id": "%s"}\n' % str(i).encode() for i in ids], ids


def sync_then(spool: Spool, ticket: Ticket, done: threading.Event) -> None:
    spool.sync(ticket)
    done.set()


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
    ends: dict[int, int] = {}  # write number -> file offset after its bytes
    guard = threading.Lock()

    def writer(w: int) -> None:
        for k in range(25):
            lines, ids = lines_of(3, f"w{w}-{k}")
            with guard:  # placement order = file order, so the end offsets are exact
                ticket = spool.write(lines, ids)
                ends[ticket.seq] = ends.get(ticket.seq - 1, 0) + sum(map(len, lines))
            spool.sync(ticket)
            with recorder.lock:  # an fsync of the file saw the bytes before the ack
                if not any(n >= ends[ticket.seq] for _, n in recorder.calls):
                    uncovered.append(ticket.seq)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert uncovered == []
    # 200 writes; each round sleeps 10 ms, so concurrent writers must have shared rounds
    assert spool.round_writes == 200
    assert spool.rounds == len(recorder.calls) < 100
    [segment] = spool.leftovers()
    data = segment.read_bytes()
    assert data.count(b"\n") == 600 and len(data) == ends[200]
    assert spool.backlog() == 600
    spool.close()


def test_placing_a_write_never_waits_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the writer thread is stuck in the kernel, requests are still placed at once
    (and can be evaluated); they are acknowledged when the disk answers."""
    stuck, release = threading.Event(), threading.Event()
    real_write = os.write

    def slow_write(fd: int, data: bytes | memoryview) -> int:
        stuck.set()
        assert release.wait(10)
        return real_write(fd, data)

    monkeypatch.setattr(spool_mod.os, "write", slow_write)
    spool = Spool(tmp_path)
    first = spool.write(*lines_of(1, "a"))
    assert stuck.wait(10)
    t = time.monotonic()
    second = spool.write(*lines_of(2, "b"))
    assert time.monotonic() - t < 0.5 and second.start == 2 and second.segment == first.segment
    acked = threading.Event()
    waiter = threading.Thread(target=sync_then, args=(spool, second, acked))
    waiter.start()
    time.sleep(0.05)
    assert not acked.is_set()
    release.set()
    waiter.join(10)
    assert acked.is_set()
    spool.sync(first)
    spool.close()
    [path] = spool.leftovers()
    assert path.read_bytes().count(b"\n") == 3


def test_a_write_is_durable_only_after_an_fsync_that_started_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write placed while a round's fsync runs is not covered by it: it waits for the next."""
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
    assert started.wait(10)
    second = spool.write(*lines_of(1, "b"))
    done = threading.Event()
    follower = threading.Thread(target=sync_then, args=(spool, second, done))
    follower.start()
    time.sleep(0.05)
    assert not done.is_set()  # the running fsync started before its bytes were written
    release.set()
    spool.sync(first)
    follower.join(10)
    assert done.is_set()
    size = (tmp_path / second.segment).stat().st_size
    assert sizes == [size // 2, size]  # the second round saw both lines
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
    spool.sync(ok)  # an earlier round's write stays acknowledged
    assert spool.failures == 1
    after = spool.append(*lines_of(2, "after"))  # round 3, in a fresh file
    assert after.segment != bad.segment == ok.segment
    # the failed segment is sealed, still on disk with all its lines for the importer
    first = spool.take()
    assert first is not None and first.name == ok.segment and first.lines == 4
    assert first.fd is None  # closed: sealed and no round needs it
    assert (tmp_path / first.name).read_bytes().count(b"\n") == 4
    second = spool.take()
    assert second is not None and second.name == after.segment and second.lines == 2
    spool.close()


def test_a_segment_is_handed_over_only_after_its_last_round(
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
    spool.write(*lines_of(3, "x"))
    assert started.wait(10)
    taken: list[Segment | None] = []
    importer = threading.Thread(target=lambda: taken.append(spool.take()))
    importer.start()  # seals the segment, then waits for its round
    time.sleep(0.05)
    assert taken == []
    release.set()
    importer.join(10)
    [segment] = taken
    assert segment is not None and segment.sealed and segment.fd is None
    assert segment.path.read_bytes().count(b"\n") == 3
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
    before = spool.append(*lines_of(1, "before"))
    real_write = os.write

    def half(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_mod.os, "write", half)
    torn = spool.write(*lines_of(1, "torn"))
    with pytest.raises(SpoolSyncError, match="No space"):
        spool.sync(torn)
    monkeypatch.setattr(spool_mod.os, "write", real_write)
    after = spool.append(*lines_of(1, "after"))
    assert after.segment != before.segment == torn.segment  # sealed after the failure
    assert (tmp_path / before.segment).read_bytes() == b'{"event_id": "before-0"}\n'
    assert (tmp_path / after.segment).read_bytes() == b'{"event_id": "after-0"}\n'
    spool.close()


def test_without_fsync_writes_still_go_through_the_writer(tmp_path: Path) -> None:
    spool = Spool(tmp_path, fsync=False)
    ticket = spool.append(*lines_of(2, "a"))
    assert (tmp_path / ticket.segment).read_bytes().count(b"\n") == 2  # written when synced
    segment = spool.take()
    assert segment is not None and segment.fd is None and spool.rounds >= 1
    spool.close()


def test_close_writes_what_is_queued_and_refuses_more(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    tickets = [spool.write(*lines_of(2, f"q{i}")) for i in range(20)]
    spool.close()
    [path] = spool.leftovers()
    assert path.read_bytes().count(b"\n") == 40
    spool.sync(tickets[-1])  # already durable: returns at once
    with pytest.raises(SpoolSyncError, match="closed"):
        spool.write(*lines_of(1, "late"))


def test_an_abandoned_request_cannot_break_the_writer(tmp_path: Path) -> None:
    """asyncio cancels a wrapped future when the awaiting request goes away."""
    spool = Spool(tmp_path)
    gone = spool.write(*lines_of(1, "gone"))
    assert not gone.durable.cancel()
    after = spool.append(*lines_of(1, "after"))
    gone.durable.result(timeout=10)
    assert (tmp_path / after.segment).read_bytes().count(b"\n") == 2
    spool.close()
