"""Retention (FEATURES G4): delete rows older than the periods in ``privacy.retention_days``.

Keys: ``events`` (every event type), ``events.<event_type>`` (one type; overrides
``events``) or a table of :data:`~microseg.config.models.RETENTION_TABLES`. The job is
set-based SQL (one DELETE per rule), idempotent (a second run at the same time deletes
nothing) and audited. Two rules protect live state: ``consents`` keeps the row in force for
each profile and purpose however old it is, and ``sends`` keeps pending sends (the ledger's
idempotency needs them).

Run it from the CLI (``microseg privacy retention run``), a scheduler, or the API server loop
via :func:`retention_loop`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from microseg.config.models import RETENTION_TABLES
from microseg.store import Store, event_ids, utcnow
from microseg.store import sql as q

log = logging.getLogger(__name__)


@dataclass
class RetentionReport:
    """Rows deleted (or, with dry_run, that would be) per rule, and each rule's cutoff."""

    now: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    cutoffs: dict[str, datetime] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _rules(retention: dict[str, int], now: datetime) -> list[tuple[str, str, exp.Expr]]:
    """(rule key, table, WHERE condition) per configured rule."""
    rules: list[tuple[str, str, exp.Expr]] = []
    typed = {k.partition(".")[2]: d for k, d in retention.items() if k.startswith("events.")}
    for key, days in sorted(retention.items()):
        cutoff = q.lit((now - timedelta(days=days)).isoformat(sep=" "))
        table, _, event_type = key.partition(".")
        ts_col = q.col(RETENTION_TABLES[table])
        old: exp.Expr = exp.LT(this=ts_col, expression=exp.cast(cutoff, "TIMESTAMP"))
        if event_type:
            old = exp.and_(old, exp.EQ(this=q.col("event_type"), expression=q.lit(event_type)))
        elif table == "events" and typed:
            others = exp.Not(
                this=q.func(
                    "list_contains",
                    exp.Array(expressions=[q.lit(t) for t in sorted(typed)]),
                    q.col("event_type"),
                )
            )
            old = exp.and_(old, others)
        elif table == "sends":
            old = exp.and_(old, exp.NEQ(this=q.col("status"), expression=q.lit("pending")))
        elif table == "consents":
            old = exp.and_(old, _superseded())
        rules.append((key, table, old))
    return rules


def _superseded() -> exp.Expr:
    """A consents row that is not the latest one of its profile and purpose."""
    later = (
        exp.select(q.lit(1))
        .from_(exp.Table(this=q.ident("consents"), alias=exp.TableAlias(this=q.ident("n"))))
        .where(
            exp.and_(
                exp.EQ(this=q.col("profile_id", "n"), expression=q.col("profile_id", "consents")),
                exp.EQ(this=q.col("purpose", "n"), expression=q.col("purpose", "consents")),
                exp.GT(this=q.col("recorded_at", "n"), expression=q.col("recorded_at", "consents")),
            )
        )
    )
    return exp.Exists(this=later)


def run_retention(
    workspace: Any,
    now: datetime | None = None,
    *,
    dry_run: bool = False,
    actor: str = "retention",
) -> RetentionReport:
    """Apply every retention rule of the project at ``now`` (default: the current time)."""
    store: Store = workspace.store
    now = now or utcnow()
    retention = dict(workspace.settings.privacy.retention_days)
    report = RetentionReport(now, dry_run=dry_run)
    for key, days in retention.items():
        report.cutoffs[key] = now - timedelta(days=days)
    rules = [r for r in _rules(retention, now) if store.table_exists(r[1])]
    expired_ids: list[int] = []
    with store.transaction():
        for key, table, where in rules:
            if dry_run:
                count = exp.select(exp.Count(this=exp.Star())).from_(q.table(table)).where(where)
                report.deleted[key] = int(store.scalar(count) or 0)
                continue
            if table == "events":  # their ids leave the event-id index after the commit
                expired_ids += event_ids.hashes_where(store, where)
            row = store.execute(
                exp.Delete(this=q.table(table), where=exp.Where(this=where))
            ).fetchone()
            report.deleted[key] = int(row[0]) if row else 0
        if report.total and not dry_run:
            store.audit(
                actor,
                "retention.run",
                None,
                {"now": now, "deleted": {k: v for k, v in report.deleted.items() if v}},
            )
    with store.lock:
        store.event_ids.forget(expired_ids)
    return report


async def retention_loop(workspace: Any, every_seconds: float = 3600.0) -> None:
    """Run the retention job forever, every ``every_seconds`` (for the API server's lifespan:
    ``asyncio.create_task(retention_loop(workspace))``, cancelled at shutdown)."""
    while True:
        try:
            report = await asyncio.to_thread(run_retention, workspace)
            if report.total:
                log.info("retention: deleted %d rows %s", report.total, report.deleted)
        except Exception:  # keep the loop alive; the next run retries
            log.exception("retention run failed")
        await asyncio.sleep(every_seconds)
