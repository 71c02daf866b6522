"""The HTTP event collector: spool durably, import through the file pipeline, report per request.

Flow: a request's events are encoded as JSON Lines and appended + fsync'd to the spool
(:mod:`microseg.api.spool`). One importer thread repeatedly seals the current segment and
imports it with :func:`microseg.ingest.pipeline.import_events` — the same validator, quarantine
and deduplication as file imports — so concurrent requests are group-committed. After the
commit it records the segment in ``spool_commits``, deletes the file, updates the serving state
and wakes the requests that asked to wait (``?wait=true``) with their exact counts. While every
event spooled was already evaluated at acknowledgement, the importer lingers (up to
``import_linger_ms`` after the previous import began): fewer, larger imports take less CPU
from the request path, and nobody waits for them.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import orjson

from microseg.api.fastcheck import SPACES
from microseg.api.gcpolicy import GcPauses, GcPolicy
from microseg.api.priority import background_executor
from microseg.api.realtime import RealtimeBridge
from microseg.api.schema import ensure_schema
from microseg.api.serving import CommittedBatch, ServingState
from microseg.api.settings import ApiSettings
from microseg.api.spool import Segment, Spool, Ticket, Waiter, repair
from microseg.config.sources import SourceSpec
from microseg.errors import MicrosegError
from microseg.ingest.pipeline import ImportResult
from microseg.store import utcnow
from microseg.workspace import Workspace

log = logging.getLogger("microseg.api.collector")
SPEC = SourceSpec(format="jsonl")
SOURCE_PREFIX = "http:"
T = TypeVar("T")


@dataclass(frozen=True)
class Placement:
    """A request's lines placed in the spool (``ticket``; None when there were none) and, when
    :meth:`Collector.place` could not evaluate them without waiting, the evaluation to finish
    in a worker thread before answering (``rest``)."""

    ticket: Ticket | None
    rest: Callable[[], object] | None = None


def event_id_text(item: Any) -> str | None:
    """The event id as the pipeline reads it (json_extract_string, trim(), blank -> None).

    Non-string ids are spooled as this text (see :meth:`Collector.encode`), because DuckDB
    renders some floats differently from Python (1e20 -> '100000000000000000000.0')."""
    if not isinstance(item, dict):
        return None
    value = item.get("event_id")
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip(SPACES) or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return orjson.dumps(value).decode()


class Collector:
    """Owns the spool and the importer thread."""

    def __init__(
        self, workspace: Workspace, settings: ApiSettings, state: ServingState | None = None
    ) -> None:
        self.workspace = workspace
        self.settings = settings
        self.state = state
        self.realtime: RealtimeBridge | None = None  # evaluates events at acknowledgement
        directory = settings.spool_dir or (workspace.project.root / ".microseg" / "spool")
        self.spool = Spool(
            Path(directory), fsync=settings.fsync, max_segment_events=settings.max_segment_events
        )
        self.failed_dir = Path(directory) / "failed"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the imports themselves run in a nicer thread (see microseg.api.priority)
        self._db = background_executor("microseg-import-db", settings.import_nice)
        self.committed_events = 0
        self.committed_segments = 0
        self.parked_segments = 0
        self.last_error: str | None = None
        self._inflight = 0
        self.gc_pauses = GcPauses()
        self.gc_policy: GcPolicy | None = None  # set while startup objects are frozen

    # -- lifecycle ------------------------------------------------------------------------------
    def recover(self) -> int:
        """Import segments left by an earlier run that have no commit record; returns how many."""
        ensure_schema(self.workspace.store)
        done = 0
        for path in self.spool.leftovers():
            if self._committed(path.name):
                path.unlink()
                continue
            lines = repair(path)
            if lines == 0:
                path.unlink()
                continue
            log.info("recovering spool segment %s (%d events)", path.name, lines)
            self._import(Segment(path, lines))
            done += 1
        return done

    def start(self) -> None:
        """Start the importer thread (and shorten the GIL switch interval, see the settings)."""
        if self.settings.gil_switch_ms > 0:
            # The importer's Python work (building SQL, reading batches back) holds the GIL;
            # with the default 5 ms every hand-over to a request's thread can cost that much.
            sys.setswitchinterval(self.settings.gil_switch_ms / 1000)
        if self.settings.gc_freeze_at_start and self.gc_policy is None:
            self.gc_policy = GcPolicy(
                self.settings.gc_refreeze_seconds,
                self.settings.gc_full_seconds,
                auto_full=self.settings.gc_auto_full,
                young_threshold=self.settings.gc_young_threshold,
            )
            self.gc_policy.activate()  # startup objects are long-lived: frozen from now
        gc.callbacks.append(self.gc_pauses)
        if self.realtime is not None:  # its membership writes run at the imports' priority
            self.realtime.store_runner = self.on_import_thread
        self._thread = threading.Thread(target=self._run, name="microseg-importer", daemon=True)
        self._thread.start()

    def on_import_thread(self, work: Callable[[], T]) -> T:
        """Run store work in the nicer import thread and wait for its result (in the calling
        thread once the collector has stopped, or while it holds the store's lock: the import
        thread would wait for that lock, and this thread for the import thread)."""
        if self.workspace.store.lock_held_here():
            return work()
        try:
            future = self._db.submit(work)
        except RuntimeError:  # shut down: nothing else uses the store through it any more
            return work()
        return future.result()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop accepting work for the importer; import what is spooled, then return."""
        self._stop.set()
        self.spool.has_data.set()
        self.spool.urgent.set()  # ends a linger
        if self._thread is not None:
            self._thread.join(timeout)
        self.spool.close()
        if self.gc_pauses in gc.callbacks:
            gc.callbacks.remove(self.gc_pauses)
        if self.gc_policy is not None:  # back to the oldest generation (another app may start)
            self.gc_policy.deactivate()
            self.gc_policy = None
        self._db.shutdown(wait=True)
        if self.realtime is not None and self.realtime.store_runner == self.on_import_thread:
            self.realtime.store_runner = None

    def alive(self) -> bool:
        """True while the importer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        began = time.monotonic()
        while True:
            if self.gc_policy is not None:
                self.gc_policy.tick()
            self._linger(began)
            segment = self.spool.take()
            if segment is None:
                if self._stop.is_set():
                    return
                self.spool.has_data.wait(0.5)
                continue
            self._inflight = segment.lines
            began = time.monotonic()
            try:
                self._import(segment)
            finally:
                self._inflight = 0

    def _linger(self, began: float) -> None:
        """Wait until ``import_linger_ms`` after the previous import ``began``, unless the
        spool needs an import now (:meth:`Spool.needs_import`) or the collector stops."""
        deadline = began + self.settings.import_linger_ms / 1000
        while not self._stop.is_set() and not self.spool.needs_import():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.spool.urgent.wait(left)
            self.spool.urgent.clear()  # needs_import() says whether it still holds

    # -- request side ---------------------------------------------------------------------------
    def encode(
        self, items: list[Any]
    ) -> tuple[list[bytes], list[str | None], list[int], list[dict[str, Any]]]:
        """Lines to spool, their event ids, their request indexes, and synchronous rejections."""
        lines: list[bytes] = []
        ids: list[str | None] = []
        indexes: list[int] = []
        rejected: list[dict[str, Any]] = []
        limit = self.settings.max_event_bytes
        for i, item in enumerate(items):
            event_id = event_id_text(item)
            if event_id is not None and not isinstance(item["event_id"], str):
                item = {**item, "event_id": event_id}  # the text counted is the text stored
            elif isinstance(item, dict) and "event_id" not in item:
                # Collected events need their own id (retries are deduplicated by it). An
                # explicit null makes the import quarantine the event as missing_event_id
                # even when no other line of its spool segment has an id (a file without an
                # id column would get generated ids instead).
                item = {**item, "event_id": None}
            try:
                line = orjson.dumps(item) + b"\n"
            except orjson.JSONEncodeError as exc:
                rejected.append({"index": i, "reason": "unencodable", "detail": str(exc)})
                continue
            if len(line) > limit:
                rejected.append(
                    {
                        "index": i,
                        "reason": "event_too_large",
                        "detail": f"{len(line)} bytes > {limit}",
                    }
                )
                continue
            lines.append(line)
            ids.append(event_id)
            indexes.append(i)
        return lines, ids, indexes, rejected

    def submit(
        self,
        lines: list[bytes],
        ids: list[str | None],
        indexes: list[int],
        wait: bool,
        items: list[Any] | None = None,
    ) -> Ticket | None:
        """:meth:`place` the lines, then block until they are durable (call from a worker
        thread). Raises :class:`~microseg.api.spool.SpoolSyncError` when the write or fsync
        fails (the request is not acknowledged; see :mod:`microseg.api.realtime`)."""
        ticket = self.place(lines, ids, indexes, wait, items).ticket
        if ticket is not None:
            self.spool.sync(ticket)
        return ticket

    def place(
        self,
        lines: list[bytes],
        ids: list[str | None],
        indexes: list[int],
        wait: bool,
        items: list[Any] | None = None,
        *,
        blocking: bool = True,
    ) -> Placement:
        """Queue encoded lines for the spool's writer and, with a real-time bridge and the
        request's ``items``, evaluate them at once: their segment memberships are served
        before they are durable. Acknowledge only once ``ticket.durable`` is resolved.

        ``blocking=False`` (the event loop): nothing here waits for the evaluation lock; if
        it is busy, the placement's ``rest`` is the evaluation left to run in a worker
        thread. (Running it in the loop when the lock is free saves two thread hand-offs,
        1-2 ms each on a busy machine, from every request.)"""
        if not lines:
            return Placement(None)
        ticket = self.spool.write(lines, ids, indexes if wait else None)
        realtime, state = self.realtime, self.state
        if (
            realtime is None
            or state is None
            or items is None
            or not self._evaluate_now(realtime, len(lines))
        ):
            self.spool.urge(ticket)  # only the import will show them: no lingering
            return Placement(ticket)
        now = utcnow()
        try:
            rows = realtime.check([items[i] for i in indexes], now)
        except Exception:  # the import still evaluates them; never fail a spooled write
            log.exception("real-time check at acknowledgement failed")
            rows = []

        def evaluate(wait_for_lock: bool) -> bool:
            try:
                evaluated = realtime.offer_rows(
                    ticket.segment, rows, state, now, blocking=wait_for_lock
                )
            except Exception:  # as above: the import evaluates them
                log.exception("real-time evaluation at acknowledgement failed")
                evaluated = 0
            if evaluated is None:
                return False
            if evaluated < len(lines):  # only the import will show the others: no lingering
                self.spool.urge(ticket)
            return True

        if evaluate(blocking):
            return Placement(ticket)
        return Placement(ticket, rest=lambda: evaluate(True))

    def _evaluate_now(self, realtime: RealtimeBridge, events: int) -> bool:
        """Interactive traffic is evaluated at acknowledgement; bulk batches, and everything
        while the importer is far behind, when their import commits (same result, later)."""
        return (
            0 < events <= self.settings.ack_eval_max_events
            and realtime.pending_estimate() < self.settings.ack_eval_max_pending
        )

    # -- importer side --------------------------------------------------------------------------
    def _committed(self, name: str) -> bool:
        return bool(
            self.workspace.store.scalar(
                "SELECT count(*) FROM spool_commits WHERE segment = ?", [name]
            )
        )

    def _import(self, segment: Segment) -> None:
        source = SOURCE_PREFIX + segment.name
        if not segment.path.exists():  # the spool could not even create it: nothing was acked
            self._undo(segment, f"{segment.name}: {segment.failure or 'file missing'}")
            return
        for attempt in range(1, self.settings.import_retries + 1):
            try:
                committed = self._db.submit(self._store_segment, segment, source).result()
                break
            except Exception as exc:  # never let the importer thread die
                self.last_error = f"{segment.name}: {type(exc).__name__}: {exc}"
                if isinstance(exc, MicrosegError | duckdb.Error | OSError):
                    log.error("import of %s failed (attempt %d): %s", segment.name, attempt, exc)
                else:  # a bug: keep the traceback, retry, then park the segment
                    log.exception("import of %s failed (attempt %d)", segment.name, attempt)
                time.sleep(min(0.2 * 2**attempt, 5.0))
        else:
            # Keep the events (nothing acknowledged is dropped); an operator re-imports the file.
            self.failed_dir.mkdir(exist_ok=True)
            segment.path.rename(self.failed_dir / segment.name)
            self.parked_segments += 1
            self._undo(segment, self.last_error)
            return
        batch, identities, outcomes = committed
        segment.path.unlink(missing_ok=True)
        if self.state is not None:
            self.state.apply_batch(batch, identities)
        # counted once the serving state shows the batch too
        self.committed_events += segment.lines
        self.committed_segments += 1
        for waiter, outcome in zip(segment.waiters, outcomes, strict=True):
            waiter.future.set_result(outcome)

    def _store_segment(
        self, segment: Segment, source: str
    ) -> tuple[CommittedBatch, list[tuple[str, str]], list[dict[str, Any]]]:
        """Import the segment and record its commit (in the nicer import thread)."""
        # One holder of the DuckDB connection at a time: API reads wait for the commit.
        with self.workspace.store.lock:
            result = self.workspace.import_events(segment.path, source=source, spec=SPEC)
            return self._record_commit(segment, source, result)

    def _undo(self, segment: Segment, detail: str | None) -> None:
        """The segment is not imported now: undo what its events did in the real-time state
        and answer the requests waiting for its commit."""
        if self.realtime is not None and self.state is not None:
            try:
                self.realtime.discard(segment.name, self.state)
            except Exception:  # keep the importer alive; the evaluator heals on restart
                log.exception("undoing the real-time evaluation of %s failed", segment.name)
        for waiter in segment.waiters:
            waiter.future.set_result({"status": "spooled", "detail": detail})

    def _record_commit(
        self, segment: Segment, source: str, result: ImportResult
    ) -> tuple[CommittedBatch, list[tuple[str, str]], list[dict[str, Any]]]:
        """Ledger row for the segment, plus what the state and the waiting requests need."""
        store = self.workspace.store
        now = utcnow()
        outcomes = self._outcomes(segment, source) if segment.waiters else []
        events = store.con.sql(
            "SELECT e.*, i.profile_id FROM events e LEFT JOIN identities i"
            " ON i.id_key = e.id_key WHERE e.source = ?",
            params=[source],
        ).to_arrow_table()
        identities = store.rows(
            "SELECT id_key, profile_id FROM identities WHERE id_key IN ("
            " SELECT 'user_id:' || user_id FROM events WHERE source = $1 AND user_id IS NOT NULL"
            " UNION ALL SELECT 'email:' || email_token FROM events WHERE source = $1"
            " AND email_token IS NOT NULL"
            " UNION ALL SELECT 'device_id:' || device_id FROM events WHERE source = $1"
            " AND device_id IS NOT NULL"
            " UNION ALL SELECT 'anonymous_id:' || anonymous_id FROM events WHERE source = $1"
            " AND anonymous_id IS NOT NULL)",
            [source],
        )
        store.execute(
            "INSERT INTO spool_commits VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                segment.name,
                result.batch_id,
                segment.lines,
                result.inserted,
                result.duplicates,
                result.quarantined,
                now,
            ],
        )
        return CommittedBatch(segment.name, events, now), [(k, p) for k, p in identities], outcomes

    def _outcomes(self, segment: Segment, source: str) -> list[dict[str, Any]]:
        """Exact accepted / duplicate / quarantined counts for each waiting request."""
        store = self.workspace.store
        bad = {
            int(r[0]): (r[1], r[2])
            for r in store.rows(
                "SELECT row_number, reason, detail FROM quarantine WHERE source = ?", [source]
            )
        }
        stored = {
            r[0] for r in store.rows("SELECT event_id FROM events WHERE source = ?", [source])
        }
        first_line: dict[str, int] = {}
        # A stored id is owned by its first valid line (quarantined lines never insert).
        for line, eid in enumerate(segment.ids, start=1):
            if eid is not None and eid in stored and eid not in first_line and line not in bad:
                first_line[eid] = line
        return [self._outcome(w, bad, stored, first_line) for w in segment.waiters]

    @staticmethod
    def _outcome(
        waiter: Waiter,
        bad: dict[int, tuple[str, str]],
        stored: set[str],
        first_line: dict[str, int],
    ) -> dict[str, Any]:
        accepted = duplicates = 0
        errors: list[dict[str, Any]] = []
        for offset, eid in enumerate(waiter.event_ids):
            line = waiter.start + offset
            if line in bad:
                reason, detail = bad[line]
                errors.append({"index": waiter.indexes[offset], "reason": reason, "detail": detail})
            elif eid is not None and eid in stored and first_line.get(eid) == line:
                accepted += 1
            else:
                duplicates += 1
        return {
            "status": "committed",
            "accepted": accepted,
            "duplicates": duplicates,
            "quarantined": len(errors),
            "errors": errors,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "spooled_events": self.spool.spooled_events,
            "committed_events": self.committed_events,
            "committed_segments": self.committed_segments,
            "backlog_events": self.spool.backlog() + self._inflight,
            "parked_segments": self.parked_segments,
            "last_error": self.last_error,
            **{f"spool_{k}": v for k, v in self.spool.stats().items()},
            "gc_pauses": self.gc_pauses.stats(),
            "gc_policy": self.gc_policy.stats() if self.gc_policy is not None else None,
        }
