"""Append-only, fsync'd spool of collected events (JSON Lines segments).

A request's events are appended to the current segment and fsync'd before the API
acknowledges them. The collector seals segments (new appends go to a fresh file), imports
each sealed segment through the file pipeline, records the commit in ``spool_commits`` and
deletes the file. After a crash, segments without a commit record are imported again; the
pipeline is idempotent by event id, so nothing acknowledged is lost or stored twice.

**One writer thread, group commit.** :meth:`Spool.write` only *places* a request's lines:
under the spool lock it assigns them their segment, line numbers and a write number, and
queues the bytes; no system call, so it never waits for the disk (on ext4 even a ``write(2)``
into the page cache or a file creation can block for hundreds of ms behind a journal commit
of another process's writes). The writer thread takes everything queued, writes it in order
(one ``write(2)`` per segment), ``fdatasync``s the files that received bytes (and the
directory when it created a file), and then marks all those writes durable at once;
:meth:`Spool.sync` waits for that. However many requests arrive, each waits for at most the
round in progress plus its own, and the real-time evaluation of a request (done between
``write`` and ``sync``, see :mod:`microseg.api.realtime`) never waits for the disk.

A segment is handed to the importer (:meth:`Spool.take`) only once every write placed in it
has been through its round, so an import always reads all of a segment's bytes, and its file
is closed by then (never under a running fsync).

**Failure.** If writing or fsyncing a segment fails, the writes of that round placed in it,
and every later one placed in it, raise :class:`SpoolSyncError` from :meth:`Spool.sync` (the
request is answered with an error, not acknowledged); a partly written request is cut off the
file, and the segment is sealed so later requests go to a fresh file (Linux may report a
failed write-back only once). Bytes written before a failed fsync usually stay readable and
are imported; a client retry is deduplicated by event id.
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
    # resolved by the writer thread once the lines are durable (or failed: SpoolSyncError)
    durable: Future[None] = field(default_factory=Future, repr=False)


@dataclass(eq=False)
class Segment:
    """One spool file and the requests waiting on it."""

    path: Path
    lines: int = 0
    waiters: list[Waiter] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # event id of every line, in order
    urgent: bool = False  # import without lingering (see Spool.needs_import)
    fd: int | None = field(default=None, repr=False)  # the writer thread's, while it writes
    size: int = 0  # bytes written
    last_seq: int = 0  # the number of the last write placed in it
    sealed: bool = False  # no more writes are placed in it
    failed_from: int | None = None  # writes from this number on failed (not acknowledged)
    failure: str = ""
    flushed: threading.Event = field(default_factory=threading.Event, repr=False)

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
    """Thread-safe spool of segments in one directory, written by one writer thread."""

    def __init__(self, directory: Path, *, fsync: bool = True, max_segment_events: int = 200_000):
        self.directory = directory
        self.fsync = fsync
        self.max_segment_events = max_segment_events
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # something to write
        self._current: Segment | None = None
        self._sealed: deque[Segment] = deque()
        self._queue: list[tuple[Segment, bytes, Ticket]] = []  # in write-number order
        self._counter = 0
        self._seq = 0  # writes placed so far
        self._finished = 0  # every write up to this number went through its round
        self._closing = False
        self._writer: threading.Thread | None = None
        self.has_data = threading.Event()
        # set when a segment starts to need its import soon (see needs_import)
        self.urgent = threading.Event()
        self.spooled_events = 0
        self.rounds = 0  # write + fsync rounds (each covers every write queued before it)
        self.round_writes = 0
        self.failures = 0

    def leftovers(self) -> list[Path]:
        """Segment files already on disk (from an earlier run), oldest first."""
        return sorted(p for p in self.directory.glob("seg-*" + SUFFIX) if p.is_file())

    # -- request side ---------------------------------------------------------------------------
    def write(
        self, lines: list[bytes], event_ids: list[str | None], indexes: list[int] | None = None
    ) -> Ticket:
        """Place lines (each ending in a newline) at the end of the current segment and queue
        them for the writer; no disk wait. :meth:`sync` the ticket before acknowledging them.

        With ``indexes`` (request index per line) the request waits for the commit."""
        payload = b"".join(lines)
        with self._lock:
            if self._closing:
                raise SpoolSyncError("the spool is closed")
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_forever, name="microseg-spool-writer", daemon=True
                )
                self._writer.start()
            seg = self._current
            if seg is None:
                self._counter += 1
                name = f"seg-{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}{SUFFIX}"
                seg = self._current = Segment(self.directory / name)
            self._seq += 1
            seg.last_seq = self._seq
            ticket = Ticket(seg.name, seg.lines + 1, len(lines), seq=self._seq, where=seg)
            # running: a request that goes away (asyncio cancels wrapped futures) cannot
            # cancel it, so the writer can always resolve it
            ticket.durable.set_running_or_notify_cancel()
            self._queue.append((seg, payload, ticket))
            if indexes is not None:
                ticket.waiter = Waiter(seg.lines + 1, event_ids, indexes)
                seg.waiters.append(ticket.waiter)
                seg.urgent = True
                self.urgent.set()
            seg.ids.extend(event_ids)
            seg.lines += len(lines)
            self.spooled_events += len(lines)
            if seg.lines >= self.max_segment_events:
                self._seal_locked()
                self.urgent.set()
            self._work.notify()
        self.has_data.set()
        return ticket

    def urge(self, ticket: Ticket) -> None:
        """The ticket's segment should be imported without waiting (its events were not all
        evaluated at acknowledgement: only the import shows them)."""
        if ticket.where is not None:
            with self._lock:
                ticket.where.urgent = True
            self.urgent.set()

    def needs_import(self) -> bool:
        """True when a spooled segment should be imported now: one is sealed (full, or
        sealed at close), or the current one is urgent (a request waits for its commit, or
        it holds events that were not evaluated at acknowledgement)."""
        with self._lock:
            return bool(self._sealed) or (self._current is not None and self._current.urgent)

    def sync(self, ticket: Ticket) -> None:
        """Block until the ticket's lines are written and (with ``fsync``) durable.

        Raises :class:`SpoolSyncError` when writing or fsyncing them failed. (An async
        caller awaits ``asyncio.wrap_future(ticket.durable)`` instead of holding a thread.)"""
        if ticket.seq:
            ticket.durable.result()

    def append(
        self, lines: list[bytes], event_ids: list[str | None], indexes: list[int] | None = None
    ) -> Ticket:
        """:meth:`write` then :meth:`sync`: the lines are durable when this returns."""
        ticket = self.write(lines, event_ids, indexes)
        self.sync(ticket)
        return ticket

    # -- the writer thread ----------------------------------------------------------------------
    def _write_forever(self) -> None:
        while True:
            with self._work:
                while not self._queue and not self._closing:
                    self._work.wait()
                if not self._queue:
                    return  # closing, nothing left
                batch, self._queue = self._queue, []
            try:
                self._round(batch)
            except BaseException as exc:  # never leave a request waiting for ever
                reason = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    for seg, _, ticket in batch:
                        self._fail_locked(seg, ticket.seq, reason)
                    self._finish_locked(batch)
                self._resolve(batch)
                if not isinstance(exc, Exception):
                    raise
            else:
                self._resolve(batch)

    def _round(self, batch: list[tuple[Segment, bytes, Ticket]]) -> None:
        """Write a batch in order, fsync what it touched, then mark it finished."""
        groups: dict[int, tuple[Segment, list[bytes], int]] = {}  # by segment, in order
        for seg, payload, ticket in batch:
            if id(seg) in groups:
                groups[id(seg)][1].append(payload)
            else:
                groups[id(seg)] = (seg, [payload], ticket.seq)
        created = False
        written: list[tuple[Segment, int]] = []
        failed: list[tuple[Segment, int, str]] = []
        for seg, payloads, first in groups.values():
            if seg.failed_from is not None:
                failed.append((seg, first, seg.failure))
                continue
            try:
                if seg.fd is None:
                    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
                    seg.fd = os.open(seg.path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
                    created = True
                view = memoryview(b"".join(payloads))
                size = len(view)
                try:
                    while view:
                        view = view[os.write(seg.fd, view) :]
                except OSError:
                    os.ftruncate(seg.fd, seg.size)  # cut the partial request off
                    raise
                seg.size += size
                written.append((seg, first))
            except OSError as exc:
                failed.append((seg, first, f"{type(exc).__name__}: {exc}"))
        if self.fsync and written:
            try:
                if created:  # the new files' directory entries
                    dir_fd = os.open(self.directory, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
            except OSError as exc:
                failed.extend(
                    (seg, first, f"{type(exc).__name__}: {exc}") for seg, first in written
                )
                written = []
            for seg, first in written:
                try:
                    assert seg.fd is not None
                    _sync_data(seg.fd)
                except OSError as exc:
                    failed.append((seg, first, f"{type(exc).__name__}: {exc}"))
        with self._lock:
            for seg, first, reason in failed:
                self._fail_locked(seg, first, reason)
            self._finish_locked(batch)

    def _fail_locked(self, seg: Segment, first: int, reason: str) -> None:
        """Writes of ``seg`` numbered ``first`` and later are not acknowledged; seal it."""
        if seg.failed_from is None or first < seg.failed_from:
            if seg.failed_from is None:
                self.failures += 1
            seg.failed_from, seg.failure = first, reason
        if seg is self._current:
            self._seal_locked()

    def _finish_locked(self, batch: list[tuple[Segment, bytes, Ticket]]) -> None:
        self._finished = batch[-1][2].seq
        self.rounds += 1
        self.round_writes += len(batch)
        for seg in {id(s): s for s, _, _ in batch}.values():
            self._flush_if_done(seg)

    @staticmethod
    def _resolve(batch: list[tuple[Segment, bytes, Ticket]]) -> None:
        """Acknowledge (or fail) the round's requests; outside the lock."""
        for seg, _, ticket in batch:
            if seg.failed_from is not None and ticket.seq >= seg.failed_from:
                reason = f"spool write failed, events not acknowledged: {seg.failure}"
                ticket.durable.set_exception(SpoolSyncError(reason))
            else:
                ticket.durable.set_result(None)

    def _flush_if_done(self, seg: Segment) -> None:
        """A sealed segment all of whose writes went through: close it, let it be imported."""
        if seg.sealed and seg.last_seq <= self._finished and not seg.flushed.is_set():
            if seg.fd is not None:
                os.close(seg.fd)
                seg.fd = None
            seg.flushed.set()

    # -- importer side --------------------------------------------------------------------------
    def _seal_locked(self) -> None:
        seg = self._current
        if seg is not None:
            seg.sealed = True
            self._sealed.append(seg)
            self._flush_if_done(seg)
        self._current = None

    def take(self) -> Segment | None:
        """The next segment to import (an already sealed one, else the current one, sealed
        now), once all its writes went through; None when nothing is spooled."""
        with self._lock:
            if not self._sealed and self._current is not None and self._current.lines:
                self._seal_locked()
            if not self._sealed:
                self.has_data.clear()
                return None
            seg = self._sealed[0]
        seg.flushed.wait()
        with self._lock:
            return self._sealed.popleft()  # only the importer thread takes

    def backlog(self) -> int:
        """Events spooled but not yet handed to the importer."""
        with self._lock:
            return sum(s.lines for s in self._sealed) + (
                self._current.lines if self._current else 0
            )

    def stats(self) -> dict[str, int]:
        """Writer counters: rounds (write + fsync), writes they covered, failed segments."""
        with self._lock:
            return {
                "rounds": self.rounds,
                "round_writes": self.round_writes,
                "failed_segments": self.failures,
            }

    def close(self, timeout: float = 60.0) -> None:
        """Seal the current segment, let the writer finish what is queued, then stop it."""
        with self._lock:
            self._seal_locked()
            self._closing = True
            self._work.notify_all()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout)
