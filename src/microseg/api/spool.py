"""Append-only, fsync'd spool of collected events (JSON Lines segments).

A request's events are appended to the current segment and fsync'd before the API
acknowledges them. The collector seals segments (new appends go to a fresh file), imports
each sealed segment through the file pipeline, records the commit in ``spool_commits`` and
deletes the file. After a crash, segments without a commit record are imported again; the
pipeline is idempotent by event id, so nothing acknowledged is lost or stored twice.

**Group commit.** :meth:`Spool.write` appends a request's lines under the spool lock (a
``write(2)`` into the page cache, no disk wait) and numbers the write; :meth:`Spool.sync`
makes it durable. One caller at a time is the *leader*: it takes every write made so far,
releases the lock, ``fdatasync``s the segment files that received them (and the directory
when a segment was created), and wakes the *followers* whose writes that covered. A request
therefore waits for at most the fsync in progress plus one more, however many arrive, and
writes never queue behind a disk flush.

A sealed segment's file stays open until the fsync covering its last write is done (a file
descriptor is never closed under a running fsync, whose number could otherwise be reused by
another file). The importer may read a sealed segment before that fsync ends: reading goes
through the page cache, and a request is acknowledged only after its own sync (or is answered
with an error), so nothing acknowledged depends on it.

**Failure.** If an fsync fails, every write it covered raises :class:`SpoolSyncError` from
:meth:`Spool.sync` (the request is answered with an error, not acknowledged) and the segment is
sealed, so later writes go to a fresh file (Linux may report a failed write-back only once).
The failed bytes usually stay readable and are imported; a client retry is deduplicated by
event id.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl"
_sync_data = getattr(os, "fdatasync", os.fsync)  # data + the size needed to read it back


class SpoolSyncError(OSError):
    """The fsync covering a request's events failed: they are not acknowledged (they are in
    the segment file and are usually still imported; a retry is deduplicated)."""


@dataclass
class Waiter:
    """A request waiting for the store commit of its lines in a segment."""

    start: int  # 1-based line number of the request's first event in the segment
    event_ids: list[str | None]  # one per line, as the pipeline will read it
    indexes: list[int]  # the request index of each line (rejected items have no line)
    future: Future[dict[str, Any]] = field(default_factory=Future)


@dataclass
class Ticket:
    """Where a request's events were spooled."""

    segment: str
    start: int
    count: int
    waiter: Waiter | None = None
    seq: int = 0  # the spool's write number (see Spool.sync); 0: nothing to sync
    where: Segment | None = field(default=None, repr=False)


@dataclass(eq=False)
class Segment:
    """One spool file and the requests waiting on it."""

    path: Path
    lines: int = 0
    waiters: list[Waiter] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # event id of every line, in order
    fd: int | None = field(default=None, repr=False)  # open for writing (and syncing)
    size: int = 0  # bytes written
    last_seq: int = 0  # the number of the last write into it
    sealed: bool = False
    failed: tuple[int, int, str] | None = None  # writes (first, last) whose fsync failed

    @property
    def name(self) -> str:
        return self.path.name


def repair(path: Path) -> int:
    """Cut a torn (unacknowledged, partly written) last line; returns the number of lines."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with path.open("r+b") as fh:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
    return data.count(b"\n", 0, end)


class Spool:
    """Thread-safe writer of spool segments in one directory (group-committed fsyncs)."""

    def __init__(self, directory: Path, *, fsync: bool = True, max_segment_events: int = 200_000):
        self.directory = directory
        self.fsync = fsync
        self.max_segment_events = max_segment_events
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._synced = threading.Condition(self._lock)
        self._current: Segment | None = None
        self._sealed: deque[Segment] = deque()
        self._counter = 0
        self._seq = 0  # writes so far
        self._durable = 0  # every write up to this number has been through an fsync
        self._syncing = False  # a leader's fsync is running
        self._dirty: dict[str, Segment] = {}  # segments with writes no fsync has covered
        self._in_flight: list[Segment] = []  # what the running fsync covers
        self._dir_dirty = False  # a segment was created since the last directory fsync
        self.has_data = threading.Event()
        self.spooled_events = 0
        self.syncs = 0  # fsync rounds (each covers every write made before it started)
        self.synced_writes = 0
        self.sync_failures = 0

    def leftovers(self) -> list[Path]:
        """Segment files already on disk (from an earlier run), oldest first."""
        return sorted(p for p in self.directory.glob("seg-*" + SUFFIX) if p.is_file())

    def _open_segment(self) -> Segment:
        self._counter += 1
        path = (
            self.directory / f"seg-{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}{SUFFIX}"
        )
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, 0o644)
        self._dir_dirty = True  # its directory entry is made durable by the next sync
        return Segment(path, fd=fd)

    def write(
        self, lines: list[bytes], event_ids: list[str | None], indexes: list[int] | None = None
    ) -> Ticket:
        """Append lines (each ending in a newline) to the current segment, not yet durable:
        :meth:`sync` the ticket before acknowledging them.

        With ``indexes`` (request index per line) the request waits for the commit."""
        payload = b"".join(lines)
        with self._lock:
            seg = self._current
            if seg is None:
                seg = self._current = self._open_segment()
            assert seg.fd is not None
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(seg.fd, view) :]
            except BaseException:
                self._undo_locked(seg)
                raise
            seg.size += len(payload)
            self._seq += 1
            seg.last_seq = self._seq
            if self.fsync:
                self._dirty[seg.name] = seg
            ticket = Ticket(seg.name, seg.lines + 1, len(lines), seq=self._seq, where=seg)
            if indexes is not None:
                ticket.waiter = Waiter(seg.lines + 1, event_ids, indexes)
                seg.waiters.append(ticket.waiter)
            seg.ids.extend(event_ids)
            seg.lines += len(lines)
            self.spooled_events += len(lines)
            if seg.lines >= self.max_segment_events:
                self._seal_locked()
        self.has_data.set()
        return ticket

    def _undo_locked(self, seg: Segment) -> None:
        """A write failed part-way (e.g. disk full): cut the partial bytes off the file, or,
        if even that fails, seal the segment (the importer quarantines the torn line)."""
        try:
            assert seg.fd is not None
            os.ftruncate(seg.fd, seg.size)
        except OSError:
            self._seal_locked()

    def sync(self, ticket: Ticket) -> None:
        """Block until the ticket's write is durable (group commit: see the module docstring).

        Raises :class:`SpoolSyncError` when the fsync covering it failed."""
        if not self.fsync or ticket.seq == 0:
            return
        with self._synced:
            while self._durable < ticket.seq:
                if self._syncing:
                    self._synced.wait()
                else:
                    self._lead_locked()
        failed = ticket.where.failed if ticket.where is not None else None
        if failed is not None and failed[0] <= ticket.seq <= failed[1]:
            raise SpoolSyncError(f"spool fsync failed, events not acknowledged: {failed[2]}")

    def append(
        self, lines: list[bytes], event_ids: list[str | None], indexes: list[int] | None = None
    ) -> Ticket:
        """:meth:`write` then :meth:`sync`: the lines are durable when this returns."""
        ticket = self.write(lines, event_ids, indexes)
        self.sync(ticket)
        return ticket

    def _lead_locked(self) -> None:
        """Fsync every write made so far, outside the lock; called holding it."""
        self._syncing = True
        first, target = self._durable + 1, self._seq
        batch = list(self._dirty.values())
        self._dirty = {}
        self._in_flight = batch
        sync_dir, self._dir_dirty = self._dir_dirty, False
        error: BaseException | None = None
        self._lock.release()
        try:
            if sync_dir:
                dir_fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            for seg in batch:
                assert seg.fd is not None  # closed only once no fsync needs it
                _sync_data(seg.fd)
        except BaseException as exc:  # state is restored below, then re-raised
            error = exc
        finally:
            self._lock.acquire()
            self._durable = target
            self._syncing = False
            self._in_flight = []
            self.syncs += 1
            self.synced_writes += target - first + 1
            if error is not None:
                self.sync_failures += 1
                reason = f"{type(error).__name__}: {error}"
                for seg in batch:
                    seg.failed = (first, target, reason)
                if any(seg is self._current for seg in batch):
                    self._seal_locked()  # never write on after a failed write-back
            for seg in batch:
                self._close_if_done(seg)
            self._synced.notify_all()
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt / SystemExit: waiters were told (failed)

    def _close_if_done(self, seg: Segment) -> None:
        """Close a sealed segment's file once no fsync needs it."""
        if (
            seg.sealed
            and seg.fd is not None
            and seg.name not in self._dirty
            and not any(s is seg for s in self._in_flight)
        ):
            os.close(seg.fd)
            seg.fd = None

    def _seal_locked(self) -> None:
        seg = self._current
        if seg is not None:
            seg.sealed = True
            self._close_if_done(seg)
            self._sealed.append(seg)
        self._current = None

    def take(self) -> Segment | None:
        """The next segment to import: an already sealed one, else seal the current one."""
        with self._lock:
            if not self._sealed and self._current is not None and self._current.lines:
                self._seal_locked()
            if not self._sealed:
                self.has_data.clear()
                return None
            return self._sealed.popleft()

    def backlog(self) -> int:
        """Events spooled but not yet handed to the importer."""
        with self._lock:
            return sum(s.lines for s in self._sealed) + (
                self._current.lines if self._current else 0
            )

    def stats(self) -> dict[str, int]:
        """Group-commit counters: fsync rounds, writes they covered, failed rounds."""
        with self._lock:
            return {
                "syncs": self.syncs,
                "synced_writes": self.synced_writes,
                "sync_failures": self.sync_failures,
            }

    def close(self) -> None:
        """Seal the current segment; fsync and close every file still open."""
        with self._synced:
            self._seal_locked()
            while self._syncing:
                self._synced.wait()
            if self._dirty and self.fsync:
                self._lead_locked()
            for seg in [*self._dirty.values(), *self._sealed]:
                if seg.fd is not None:
                    os.close(seg.fd)
                    seg.fd = None
            self._dirty = {}
