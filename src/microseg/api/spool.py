"""Append-only, fsync'd spool of collected events (JSON Lines segments).

A request's events are appended to the current segment and fsync'd before the API
acknowledges them. The collector seals segments (new appends go to a fresh file), imports
each sealed segment through the file pipeline, records the commit in ``spool_commits`` and
deletes the file. After a crash, segments without a commit record are imported again; the
pipeline is idempotent by event id, so nothing acknowledged is lost or stored twice.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

SUFFIX = ".jsonl"


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


@dataclass
class Segment:
    """One spool file and the requests waiting on it."""

    path: Path
    lines: int = 0
    waiters: list[Waiter] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # event id of every line, in order

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
    """Thread-safe writer of spool segments in one directory."""

    def __init__(self, directory: Path, *, fsync: bool = True, max_segment_events: int = 200_000):
        self.directory = directory
        self.fsync = fsync
        self.max_segment_events = max_segment_events
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._current: Segment | None = None
        self._fh: IO[bytes] | None = None
        self._sealed: deque[Segment] = deque()
        self._counter = 0
        self.has_data = threading.Event()
        self.spooled_events = 0

    def leftovers(self) -> list[Path]:
        """Segment files already on disk (from an earlier run), oldest first."""
        return sorted(p for p in self.directory.glob("seg-*" + SUFFIX) if p.is_file())

    def _open_segment(self) -> Segment:
        self._counter += 1
        path = (
            self.directory / f"seg-{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}{SUFFIX}"
        )
        self._fh = path.open("xb")
        if self.fsync:  # make the new directory entry durable too
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return Segment(path)

    def append(
        self, lines: list[bytes], event_ids: list[str | None], indexes: list[int] | None = None
    ) -> Ticket:
        """Write lines (each ending in a newline) durably; returns where they went.

        With ``indexes`` (request index per line) the request waits for the commit."""
        payload = b"".join(lines)
        with self._lock:
            seg = self._current
            if seg is None:
                seg = self._current = self._open_segment()
            assert self._fh is not None
            self._fh.write(payload)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
            ticket = Ticket(seg.name, seg.lines + 1, len(lines))
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

    def _seal_locked(self) -> None:
        if self._current is not None and self._fh is not None:
            self._fh.close()
            self._sealed.append(self._current)
        self._current, self._fh = None, None

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

    def close(self) -> None:
        with self._lock:
            self._seal_locked()
