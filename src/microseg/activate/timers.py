"""Durable journey timers (table ``timers``) and the journey schema additions (migration 10).

A timer is a row: ``(timer_id, profile_id, journey, step, due_at, fired_at, kind, enrolment,
outcome)``. Kinds: ``step`` (run this step), ``wake`` (a ``wait`` is over), ``timeout`` (a
``wait_for`` timed out). A timer stays pending (``fired_at`` NULL) until the transition it
causes commits, so a crash before that simply leaves it due: the next run fires it again
and the ledger's send key makes the repeated send a no-op. Timer ids are deterministic
(journey, profile, enrolment, step, visit, kind), so scheduling twice inserts once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from microseg.store import Store
from microseg.store.schema import MIGRATIONS

JOURNEY_MIGRATION = next(m for m in MIGRATIONS if m.version == 10)


def ensure_schema(store: Store) -> None:
    """Apply migration 10 if the store does not have it yet (stores opened before it existed)."""
    done = store.scalar(
        "SELECT count(*) FROM schema_migrations WHERE version = ?", [JOURNEY_MIGRATION.version]
    )
    if done:
        return
    with store.transaction():
        for stmt in JOURNEY_MIGRATION.statements:
            store.execute(stmt)
        store.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)",
            [JOURNEY_MIGRATION.version, JOURNEY_MIGRATION.name],
        )


def timer_id(
    journey: str, profile_id: str, enrolment: int, step: str, visit: int, kind: str
) -> str:
    """The deterministic id of one timer."""
    return f"{journey}:{profile_id}:{enrolment}:{step}:{visit}:{kind}"


@dataclass(frozen=True)
class Timer:
    """One pending timer."""

    timer_id: str
    profile_id: str
    journey: str
    step: str
    due_at: datetime
    kind: str
    enrolment: int


class Timers:
    """Schedule, list, fire and cancel journey timers."""

    def __init__(self, store: Store) -> None:
        self.store = store
        ensure_schema(store)

    def schedule(
        self,
        journey: str,
        profile_id: str,
        enrolment: int,
        step: str,
        visit: int,
        kind: str,
        due_at: datetime,
    ) -> str:
        """Insert a timer (no-op if the same timer exists); call inside the transition."""
        tid = timer_id(journey, profile_id, enrolment, step, visit, kind)
        self.store.execute(
            "INSERT INTO timers (timer_id, profile_id, journey, step, due_at, fired_at, payload,"
            " kind, enrolment) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?) ON CONFLICT DO NOTHING",
            [tid, profile_id, journey, step, due_at, kind, enrolment],
        )
        return tid

    def due(self, now: datetime, limit: int = 1000, journeys: Sequence[str] = ()) -> list[Timer]:
        """Pending timers due at ``now``, oldest first."""
        rows = self.store.rows(
            "SELECT timer_id, profile_id, journey, step, due_at, coalesce(kind, 'step'),"
            " coalesce(enrolment, 0) FROM timers WHERE fired_at IS NULL AND due_at <= ?"
            " AND (len(?) = 0 OR list_contains(?, journey)) ORDER BY due_at, timer_id LIMIT ?",
            [now, list(journeys), list(journeys), limit],
        )
        return [
            Timer(str(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], str(r[5]), int(r[6]))
            for r in rows
        ]

    def fire(self, tid: str, at: datetime, outcome: str) -> None:
        """Mark a timer fired (call inside the transition's transaction)."""
        self.store.execute(
            "UPDATE timers SET fired_at = ?, outcome = ? WHERE timer_id = ? AND fired_at IS NULL",
            [at, outcome[:200], tid],
        )

    def cancel(self, journey: str, profile_id: str, at: datetime, reason: str) -> None:
        """Cancel every pending timer of one profile in a journey."""
        self.store.execute(
            "UPDATE timers SET fired_at = ?, outcome = ? WHERE journey = ? AND profile_id = ?"
            " AND fired_at IS NULL",
            [at, f"cancelled: {reason}"[:200], journey, profile_id],
        )

    def next_due(self) -> datetime | None:
        found = self.store.scalar("SELECT min(due_at) FROM timers WHERE fired_at IS NULL")
        return found if isinstance(found, datetime) else None

    def pending(self, journey: str | None = None, limit: int = 1000) -> pd.DataFrame:
        """Pending timers (all journeys, or one), soonest first."""
        return self.store.df(
            "SELECT journey, profile_id, step, kind, enrolment, due_at FROM timers"
            " WHERE fired_at IS NULL AND (CAST(? AS VARCHAR) IS NULL OR journey = ?)"
            " ORDER BY due_at, timer_id LIMIT ?",
            [journey, journey, limit],
        )

    def counts(self) -> pd.DataFrame:
        """Pending / fired timers per journey and kind."""
        return self.store.df(
            "SELECT journey, coalesce(kind, 'step') AS kind,"
            " count(*) FILTER (WHERE fired_at IS NULL) AS pending,"
            " count(*) FILTER (WHERE fired_at IS NOT NULL) AS fired, min(due_at)"
            " FILTER (WHERE fired_at IS NULL) AS next_due FROM timers GROUP BY 1, 2 ORDER BY 1, 2"
        )
