"""Plug the real-time segment evaluator into the collector and the serving state.

Every durably committed batch is fed, event by event in time order, to a
``RealtimeEvaluator`` (``microseg.segments``); its membership changes update the serving
state at once (so ``/v1/decide`` reflects them) and are persisted to ``memberships`` /
``membership_history``. A periodic ``sweep(now)`` settles time-based conditions
("no purchase within 24 h") without waiting for another event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from microseg.api.serving import CommittedBatch, ServingState
from microseg.errors import DefinitionError
from microseg.store import Store, utcnow

log = logging.getLogger("microseg.api.realtime")


class Change(Protocol):
    segment: str
    profile_id: str
    change: str  # "entered" | "exited"


class Evaluator(Protocol):
    """What the bridge needs from ``microseg.segments.RealtimeEvaluator``."""

    def on_event(self, event: Mapping[str, Any], now: datetime | None = None) -> list[Any]: ...
    def sweep(self, now: datetime) -> list[Any]: ...
    def on_consent(
        self,
        profile_id: str,
        purpose: str,
        granted: bool,
        recorded_at: datetime,
        expires_at: datetime | None = None,
    ) -> list[Any]: ...
    def forget(self, profile_id: str) -> None: ...


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


class RealtimeBridge:
    """A serving-state subscriber driving an evaluator; thread-safe (one lock)."""

    def __init__(self, evaluator: Evaluator, store: Store | None = None) -> None:
        self.evaluator = evaluator
        self.store = store  # where changes are persisted; None keeps them in memory only
        self._lock = threading.Lock()
        self.changes_applied = 0

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
        return cls(evaluator, workspace.store)

    def __call__(self, batch: CommittedBatch, state: ServingState) -> None:
        rows = [r for r in batch.events.to_pylist() if r.get("profile_id") is not None]
        rows.sort(key=lambda r: r["ts"])
        with self._lock:
            changes = [c for row in rows for c in self.evaluator.on_event(row)]
            self._apply(changes, state)

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
            return self._apply(changes, state)

    def forget(self, profile_id: str) -> None:
        """Drop a profile from the evaluator (after an erasure)."""
        with self._lock:
            self.evaluator.forget(profile_id)

    def sweep(self, state: ServingState, now: datetime | None = None) -> int:
        """Settle time boundaries up to ``now``; returns the number of membership changes."""
        with self._lock:
            changes = self.evaluator.sweep(now or utcnow())
            return self._apply(changes, state)

    def _apply(self, changes: Iterable[Change], state: ServingState) -> int:
        changes = list(changes)
        if not changes:
            return 0
        state.apply_changes((c.profile_id, c.segment, c.change == "entered") for c in changes)
        if self.store is not None:
            from microseg.segments import apply_changes

            with self.store.lock:
                apply_changes(self.store, changes)  # type: ignore[arg-type]
        self.changes_applied += len(changes)
        return len(changes)
