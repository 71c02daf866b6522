"""Reading journey outcomes: the report of one engine cycle, enrolments and sends per journey."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from microseg.store import Store


@dataclass
class RunReport:
    """What one engine cycle did."""

    now: datetime
    enrolled: dict[str, int] = field(default_factory=dict)
    goals: int = 0
    waits_resolved: int = 0
    fired: int = 0
    sends: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        sends = ", ".join(f"{k} {v}" for k, v in sorted(self.sends.items())) or "none"
        return (
            f"{self.now:%Y-%m-%d %H:%M} enrolled {sum(self.enrolled.values())}, goals"
            f" {self.goals}, waits resolved {self.waits_resolved}, steps {self.fired},"
            f" sends: {sends}, retried {self.retried}, errors {len(self.errors)}"
        )


def status_frame(store: Store, journey: str | None = None) -> pd.DataFrame:
    """Enrolments per journey, status and step (every journey, or one)."""
    from microseg.activate.timers import ensure_schema

    ensure_schema(store)
    return store.df(
        "SELECT journey, status, step, count(*) AS profiles, max(updated_at) AS last_change"
        " FROM journey_state WHERE CAST(? AS VARCHAR) IS NULL OR journey = ?"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        [journey, journey],
    )


def sends_frame(store: Store, journey: str | None = None) -> pd.DataFrame:
    """Ledger outcomes of journey sends (send keys start with ``<journey>:``)."""
    return store.df(
        "SELECT split_part(send_key, ':', 1) AS journey, status, count(*) AS sends,"
        " max(coalesce(sent_at, updated_at)) AS last FROM sends WHERE (CAST(? AS VARCHAR) IS NULL"
        " AND split_part(send_key, ':', 1) IN (SELECT DISTINCT journey FROM journey_state))"
        " OR split_part(send_key, ':', 1) = ? GROUP BY 1, 2 ORDER BY 1, 2",
        [journey, journey],
    )
