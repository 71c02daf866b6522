"""Plug the real-time segment evaluator into the collector and the serving state.

Two ways in, one evaluator:

* **At acknowledgement** (:meth:`RealtimeBridge.offer`): once a request's events are placed
  in the spool (queued for its writer thread, before they are written and fsync'd, see
  below), the ones :class:`~microseg.api.fastcheck.FastValidator` can validate exactly as the
  import will are evaluated at once, so ``/v1/decide`` shows the new membership before the
  response leaves. They are remembered as *pending* under their spool segment.
* **At commit** (``__call__``, a serving-state subscriber): the import's committed rows are
  the truth. Pending events it stored for the same profile are not evaluated twice; the
  others (events the fast check left to the import) are evaluated now. A pending event the
  import did not store (a duplicate of an old event, quarantined) or stored under another
  profile makes the bridge re-read the profiles involved from the store (``corrections``).

**Visibility does not wait for durability.** The collector offers a request's events right
after :meth:`~microseg.api.spool.Spool.write` has placed them (in memory) and only then waits
for the spool's writer thread to write and fsync them (``ticket.durable``), so a membership is
served about as soon as the request arrives, never after a disk wait (on a busy ext4 disk a
plain ``write(2)`` can block for hundreds of ms). The contract that keeps this honest:

* the *acknowledgement* still means durable: a request is answered 2xx only after its fsync
  succeeded, so a kill -9 loses no acknowledged event;
* what is *shown* is always settled by the store: the spool hands a segment to the importer
  only after all its writes went through, and its commit settles the pending events like any
  other: stored under the same profile -> nothing to do; not stored (quarantined, duplicate,
  lost to a failed write, failed import) -> the profiles are re-read from the store; a
  segment whose file could not even be created is :meth:`RealtimeBridge.discard`-ed;
* if the write or fsync fails, the request is answered 503 (not acknowledged) although its
  events were shown; bytes written before a failed fsync are usually still imported (then the
  membership stays), and the client's retry is deduplicated by event id;
* a crash before the import loses only in-memory state (serving state, pending events): the
  server rebuilds both from the store, then re-imports the spool's leftover segments, so an
  event shown but never made durable disappears again, as an unacknowledged event may.

Membership changes update the serving state at once and are persisted to ``memberships`` /
``membership_history`` when the batch commits (after its events are stored). A periodic
``sweep(now)`` settles time-based conditions ("no purchase within 24 h") without waiting for
another event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa

from microseg.api.fastcheck import FastValidator, profile_id_for_new_key
from microseg.api.serving import CommittedBatch, ServingState
from microseg.errors import DefinitionError
from microseg.privacy.markers import all_markers
from microseg.store import Store, utcnow

log = logging.getLogger("microseg.api.realtime")


class Change(Protocol):
    segment: str
    profile_id: str
    change: str  # "entered" | "exited"


class Evaluator(Protocol):
    """What the bridge needs from ``microseg.segments.RealtimeEvaluator``."""

    def on_event(self, event: Mapping[str, Any], now: datetime | None = None) -> list[Any]: ...
    def sweep(self, now: datetime, limit: int | None = None) -> list[Any]: ...
    def has_due(self, now: datetime) -> bool: ...
    def on_consent(
        self,
        profile_id: str,
        purpose: str,
        granted: bool,
        recorded_at: datetime,
        expires_at: datetime | None = None,
    ) -> list[Any]: ...
    def forget(self, profile_id: str) -> None: ...
    def replace(self, profile_id: str, data: Any, now: datetime) -> list[Any]: ...
    def knows(self, profile_id: str) -> bool: ...


def bridge_for(workspace: Any, enabled: bool = True) -> RealtimeBridge | None:
    """The bridge `microseg serve` uses: None when disabled, when the project has no segment
    files, or when the definitions do not check against the store yet (e.g. traits not
    computed) — then the server still starts, serving batch memberships, and says why."""
    if not enabled:
        return None
    try:
        return RealtimeBridge.from_workspace(workspace)
    except DefinitionError as exc:
        log.warning(
            "real-time segments disabled (%d problems; fix them or compute traits first): %s",
            len(exc.problems),
            "; ".join(str(p) for p in exc.problems[:5]),
        )
        return None


SOURCE_PREFIX = "http:"  # the collector's source name prefix for spool segments
REMEMBERED_IDS = 100_000  # committed event ids kept to refuse late provisional duplicates
REMEMBERED_SEGMENTS = 1_000
COMMIT_CHUNK = 200  # stored events confirmed per hold of the evaluation lock (see __call__)
SWEEP_CHUNK = 50  # profiles settled per hold of the evaluation lock (see RealtimeBridge.sweep)


class RealtimeBridge:
    """A serving-state subscriber driving an evaluator; thread-safe (one lock)."""

    def __init__(
        self,
        evaluator: Evaluator,
        store: Store | None = None,
        validator: FastValidator | None = None,
        event_types: Iterable[str] = (),
        session_types: Iterable[str] = (),
    ) -> None:
        self.evaluator = evaluator
        self.store = store  # where changes are persisted; None keeps them in memory only
        self.validator = validator  # None: events are evaluated only when committed
        self.event_types = sorted(event_types)  # what a correction re-reads per profile
        # types read per session: without a client session id they wait for the import's
        self.session_types = frozenset(session_types)
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()
        self.lock_held_ms: dict[str, float] = {}  # longest hold of _lock, by holder
        self.lock_total_ms: dict[str, float] = {}  # all holds, by holder
        self.lock_holds: dict[str, int] = {}
        self.lock_waited_ms: dict[str, float] = {}  # longest wait for _lock, by holder
        self.lock_busy: dict[str, int] = {}  # non-blocking asks that found _lock busy
        # runs persist()'s store work and waits for it (None: in the calling thread)
        self.store_runner: Callable[[Callable[[], set[str]]], set[str]] | None = None
        self._pending: dict[str, dict[str, str]] = {}  # spool segment -> event id -> profile
        self._pending_ids: dict[str, str] = {}  # event id -> spool segment
        self._committed_ids: OrderedDict[str, None] = OrderedDict()
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._unsaved: list[Change] = []
        self._suspect: dict[str, set[str]] = {}  # spool segment -> profiles to re-read
        self.changes_applied = 0
        self.provisional_events = 0
        self.corrections = 0

    @classmethod
    def from_workspace(cls, workspace: Any, now: datetime | None = None) -> RealtimeBridge | None:
        """A bridge over the project's segment files, or None when the project has none."""
        from microseg.segments import RealtimeEvaluator
        from microseg.segments.parse import load_segments, project_segment_files

        files = project_segment_files(workspace.project.root)
        if not files:
            return None
        segments, _ = load_segments(files)
        evaluator = RealtimeEvaluator.from_store(
            workspace.store, workspace.settings, segments, start=now or utcnow(), history=True
        )
        validator = FastValidator(workspace.settings, workspace.keys, all_markers(workspace.store))
        return cls(
            evaluator, workspace.store, validator, evaluator.horizon, evaluator.session_types
        )

    # -- at acknowledgement -----------------------------------------------------------------
    def offer(
        self, segment: str, items: Sequence[Any], state: ServingState, now: datetime | None = None
    ) -> int:
        """Evaluate acknowledged (spooled, not yet imported) events; returns how many were.

        Events the fast check is not sure about, duplicates of pending or recently committed
        events, and events of a segment already committed are left to the import."""
        now = now or utcnow()
        evaluated = self.offer_rows(segment, self.check(items, now), state, now)
        assert evaluated is not None  # a blocking offer always gets the lock
        return evaluated

    def check(self, items: Sequence[Any], now: datetime) -> list[dict[str, Any]]:
        """The fast check's rows of the items it can evaluate now, as the import will store
        them (no lock: run it before :meth:`offer_rows`)."""
        if self.validator is None or not items:
            return []
        checked = (self.validator.check(item, now) for item in items)
        return [
            row
            for row in checked
            if row is not None
            and (row["session_id"] is not None or row["event_type"] not in self.session_types)
        ]

    def offer_rows(
        self,
        segment: str,
        rows: list[dict[str, Any]],
        state: ServingState,
        now: datetime,
        *,
        blocking: bool = True,
    ) -> int | None:
        """:meth:`offer` for rows :meth:`check` returned at ``now``. With ``blocking=False``
        it returns None, having done nothing, when the evaluation lock is busy (the caller
        must not wait: the event loop), and the caller offers them again later."""
        if not rows:
            return 0
        source = SOURCE_PREFIX + segment
        with self._evaluating("offer", blocking) as held:
            if not held:
                return None
            if segment in self._delivered:
                return 0  # the import got there first: its commit already evaluated them
            pending = self._pending.setdefault(segment, {})
            fresh: list[dict[str, Any]] = []
            for row in rows:
                eid = row["event_id"]
                if eid in self._pending_ids or eid in self._committed_ids:
                    continue
                pid = state.profile_for_key(row["id_key"]) or profile_id_for_new_key(row["id_key"])
                row.update(received_at=now, source=source, profile_id=pid)
                pending[eid] = pid
                self._pending_ids[eid] = segment
                fresh.append(row)
            if not fresh:
                return 0
            state.add_keys((row["id_key"], row["profile_id"]) for row in fresh)
            fresh.sort(key=lambda r: r["ts"])
            changes: list[Change] = []
            try:
                for row in fresh:
                    changes.extend(self.evaluator.on_event(row))
            except Exception:
                # half-applied: re-read these profiles from the store once the batch commits
                self._suspect.setdefault(segment, set()).update(r["profile_id"] for r in fresh)
                raise
            finally:
                self._apply(changes, state)  # saved when the batch commits
            self.provisional_events += len(fresh)
            return len(fresh)

    # -- at commit --------------------------------------------------------------------------
    def __call__(self, batch: CommittedBatch, state: ServingState) -> None:
        table = batch.events
        # Confirming an event needs only its id and profile: only the events evaluated here
        # (not at acknowledgement) become Python rows (to_pylist is the costly part, and it
        # holds the GIL the request path needs).
        event_ids = table.column("event_id").to_pylist() if table.num_rows else []
        profile_ids = table.column("profile_id").to_pylist() if table.num_rows else []
        segment = batch.segment
        with self._evaluating("commit"):
            pending = self._take(segment)  # offers of this segment are refused from now on
        fresh: list[int] = []  # positions of the stored events to evaluate now
        stale: set[str] = set()
        # Confirm the stored events in chunks, releasing the lock in between (acknowledgements
        # wait for one chunk, not the whole batch). An id stays in _pending_ids until its
        # chunk moves it to _committed_ids, so an offer in between still refuses a re-send.
        for start in range(0, len(event_ids), COMMIT_CHUNK):
            with self._evaluating("commit"):
                for i in range(start, min(start + COMMIT_CHUNK, len(event_ids))):
                    eid, pid = event_ids[i], profile_ids[i]
                    if pid is None:
                        continue
                    self._remember(self._committed_ids, eid, REMEMBERED_IDS)
                    seen_as = pending.pop(eid, None)
                    owner = self._pending_ids.get(eid)
                    if owner == segment:
                        del self._pending_ids[eid]
                    elif seen_as is None and owner is not None:
                        # pending under a later segment (a re-send): this commit stores it
                        del self._pending_ids[eid]
                        seen_as = self._pending.get(owner, {}).pop(eid, None)
                    if seen_as == pid:
                        continue  # evaluated at acknowledgement
                    if seen_as is not None:
                        stale.add(seen_as)  # evaluated under another profile
                    fresh.append(i)
        rows = self._rows(table, fresh)
        with self._evaluating("commit"):
            self._release(segment, pending)
            stale.update(pending.values())  # evaluated, but the import did not store them
            stale.update(self._suspect.pop(segment, ()))
            changes = [c for row in rows for c in self.evaluator.on_event(row)]
            changes.extend(self._correct(stale, state))
            self._apply(changes, state)
        self.persist()

    def _rows(self, table: pa.Table, positions: list[int]) -> list[dict[str, Any]]:
        """The events at ``positions`` as evaluator rows (only the columns conditions read),
        in time order."""
        if not positions:
            return []
        fields = getattr(self.evaluator, "fields", None)
        if fields is not None:
            keep = {*fields, "event_id", "event_type", "ts", "profile_id", "session_id"}
            table = table.select([c for c in table.column_names if c in keep])
        rows = table.take(positions).to_pylist()
        rows.sort(key=lambda r: r["ts"])
        return rows

    def discard(self, segment: str, state: ServingState) -> int:
        """A spool segment will not be imported now (parked after failed imports): undo what
        its pending events did. Returns the number of profiles re-read."""
        with self._lock:
            stale = set(self._settle(segment).values()) | self._suspect.pop(segment, set())
            self._apply(self._correct(stale, state), state)
        self.persist()
        return len(stale)

    def _settle(self, segment: str) -> dict[str, str]:
        """Pending events of a segment (now leaving the pending set); marks it delivered."""
        pending = self._take(segment)
        self._release(segment, pending)
        return pending

    def _take(self, segment: str) -> dict[str, str]:
        """Mark a segment delivered (its offers are refused from now on) and return its
        pending events; their ids stay pending until :meth:`_release`."""
        self._remember(self._delivered, segment, REMEMBERED_SEGMENTS)
        return self._pending.pop(segment, {})

    def _release(self, segment: str, event_ids: Iterable[str]) -> None:
        """The ids no longer pending under ``segment`` (a later re-send keeps its own)."""
        for eid in event_ids:
            if self._pending_ids.get(eid) == segment:
                del self._pending_ids[eid]

    @staticmethod
    def _remember(seen: OrderedDict[str, None], key: str, limit: int) -> None:
        seen[key] = None
        seen.move_to_end(key)
        while len(seen) > limit:
            seen.popitem(last=False)

    def _correct(self, profile_ids: set[str], state: ServingState) -> list[Change]:
        """Re-derive profiles from the store after the import disagreed with the fast path."""
        if not profile_ids:
            return []
        if self.store is None:
            log.warning("cannot correct %d profiles without a store", len(profile_ids))
            return []
        from microseg.segments.snapshot import load_profile

        # The re-read state holds only stored events: the profiles' events still pending in
        # later segments are forgotten by it, so their commits must evaluate them again.
        for seg, entries in self._pending.items():
            for eid in [e for e, pid in entries.items() if pid in profile_ids]:
                del entries[eid]
                if self._pending_ids.get(eid) == seg:
                    del self._pending_ids[eid]
        now = utcnow()
        horizon = now + timedelta(days=1)  # events may be a little ahead of the clock
        with self.store.lock:
            wanted = sorted(profile_ids)
            stored = {
                str(r[0])
                for r in self.store.rows(
                    "SELECT profile_id FROM profiles WHERE merged_into IS NULL"
                    " AND list_contains(?, profile_id)",
                    [wanted],
                )
            }
            data = {pid: load_profile(self.store, pid, self.event_types, horizon) for pid in stored}
        changes: list[Change] = []
        for pid in wanted:
            changes.extend(self.evaluator.replace(pid, data.get(pid), now))
            if pid not in stored:
                state.forget(pid)
        self.corrections += len(wanted)
        log.info("re-read %d profiles after the import disagreed with the fast path", len(wanted))
        return changes

    # -- other inputs -----------------------------------------------------------------------
    def consent(
        self,
        state: ServingState,
        profile_id: str,
        purpose: str,
        granted: bool,
        recorded_at: datetime,
        expires_at: datetime | None = None,
    ) -> int:
        """Apply a consent decision at once; returns the number of membership changes."""
        with self._lock:
            changes = self.evaluator.on_consent(
                profile_id, purpose, granted, recorded_at, expires_at
            )
            applied = self._apply(changes, state)
        self.persist()
        return applied

    def forget(self, profile_id: str) -> None:
        """Drop a profile from the evaluator (after an erasure); refresh the erasure markers."""
        with self._lock:
            self.evaluator.forget(profile_id)
            self._unsaved = [c for c in self._unsaved if c.profile_id != profile_id]
            if self.validator is not None and self.store is not None:
                self.validator.set_markers(all_markers(self.store))

    def sweep(self, state: ServingState, now: datetime | None = None) -> int:
        """Settle time boundaries up to ``now``; returns the number of membership changes.

        In chunks of :data:`SWEEP_CHUNK` profiles, releasing the evaluation lock between
        them: acknowledgements wait for one chunk, not for the whole sweep (a 10 s sweep at
        2,000 ev/s held the lock up to 72 ms)."""
        now = now or utcnow()
        applied = 0
        while True:
            with self._evaluating("sweep"):
                applied += self._apply(self.evaluator.sweep(now, limit=SWEEP_CHUNK), state)
                if not self.evaluator.has_due(now):
                    break
        self.persist()
        return applied

    @contextmanager
    def _evaluating(self, what: str, blocking: bool = True) -> Iterator[bool]:
        """Hold the evaluation lock (acknowledgements wait meanwhile), recording the holds
        by ``what``. Yields False, without the lock, when ``blocking`` is off and it is busy."""
        asked = time.perf_counter()
        if not self._lock.acquire(blocking):
            self.lock_busy[what] = self.lock_busy.get(what, 0) + 1
            yield False
            return
        started = time.perf_counter()
        try:
            yield True
        finally:
            took = 1000 * (time.perf_counter() - started)
            self.lock_held_ms[what] = max(self.lock_held_ms.get(what, 0.0), took)
            self.lock_total_ms[what] = self.lock_total_ms.get(what, 0.0) + took
            self.lock_holds[what] = self.lock_holds.get(what, 0) + 1
            waited = 1000 * (started - asked)
            self.lock_waited_ms[what] = max(self.lock_waited_ms.get(what, 0.0), waited)
            self._lock.release()

    def pending_count(self) -> int:
        """Events evaluated at acknowledgement whose import has not committed yet. Read under
        the lock: a commit or discard pops its events first and corrects profiles after, so
        an unlocked read could report 0 while the correction is still being applied."""
        with self._lock:
            return len(self._pending_ids)

    def pending_estimate(self) -> int:
        """:meth:`pending_count` without the lock (for a threshold; never waits)."""
        return len(self._pending_ids)

    def stats(self) -> dict[str, float]:
        with self._lock:
            return {
                "changes_applied": self.changes_applied,
                "provisional_events": self.provisional_events,
                "pending_events": len(self._pending_ids),
                "corrections": self.corrections,
                "unsaved_changes": len(self._unsaved),
            } | {
                f"lock_{figure}_{k}": round(v, 1)
                for figure, values in (
                    ("max_ms", self.lock_held_ms),
                    ("total_ms", self.lock_total_ms),
                    ("holds", self.lock_holds),
                    ("max_wait_ms", self.lock_waited_ms),
                    ("busy", self.lock_busy),
                )
                for k, v in values.items()
            }

    def _apply(self, changes: Iterable[Change], state: ServingState) -> int:
        """Serve the changes at once; they are saved by the next :meth:`persist`."""
        changes = list(changes)
        if changes:
            state.apply_changes((c.profile_id, c.segment, c.change == "entered") for c in changes)
            self.changes_applied += len(changes)
            if self.store is not None:
                self._unsaved.extend(changes)
        return len(changes)

    def persist(self) -> int:
        """Write the unsaved membership changes to the store, in order; returns how many.

        Runs outside the evaluation lock (acknowledgements never wait for the store);
        its own lock keeps batches taken by different threads in order. With a
        ``store_runner`` the store work runs through it (the collector's nicer import thread:
        it then yields the CPU to requests); the evaluation lock is taken in the calling thread
        only, never in the nicer one."""
        if self.store is None:
            return 0
        with self._persist_lock:
            with self._lock:
                changes, self._unsaved = self._unsaved, []
            if not changes:
                return 0
            runner = self.store_runner
            try:
                stored = (
                    self._write(changes) if runner is None else runner(lambda: self._write(changes))
                )
            except BaseException:
                with self._lock:  # keep them for the next attempt
                    self._unsaved[:0] = changes
                raise
            later = [c for c in changes if c.profile_id not in stored]
            if later:
                with self._lock:
                    self._unsaved[:0] = [c for c in later if self.evaluator.knows(c.profile_id)]
            return len(changes) - len(later)

    def _write(self, changes: list[Change]) -> set[str]:
        """Save the changes of profiles the store has; returns those profiles. An erased one
        (forgotten while this batch was taken) must not come back; a provisional one waits
        for its import."""
        from microseg.segments import apply_changes

        assert self.store is not None
        with self.store.lock:
            stored = {
                str(r[0])
                for r in self.store.rows(
                    "SELECT profile_id FROM profiles WHERE list_contains(?, profile_id)",
                    [sorted({c.profile_id for c in changes})],
                )
            }
            ready = [c for c in changes if c.profile_id in stored]
            if ready:
                apply_changes(self.store, ready)  # type: ignore[arg-type]
        return stored
