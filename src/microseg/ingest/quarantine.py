"""Quarantine: list invalid records with their reasons and replay them after a fix."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.console import Progress
from microseg.ingest.pipeline import ImportResult, import_events
from microseg.privacy.crypto import KeyRing
from microseg.store import Store, utcnow


def list_quarantine(
    store: Store, status: str | None = "open", reason: str | None = None
) -> pd.DataFrame:
    """Quarantined records, newest first, optionally filtered by status and reason code."""
    return store.df(
        "SELECT q_id, source, row_number, reason, detail, record, quarantined_at, status"
        " FROM quarantine WHERE (? IS NULL OR status = ?) AND (? IS NULL OR reason = ?)"
        " ORDER BY q_id",
        [status, status, reason, reason],
    )


def summary(store: Store) -> pd.DataFrame:
    return store.df(
        "SELECT reason, status, count(*) AS n FROM quarantine GROUP BY ALL ORDER BY n DESC"
    )


def replay(
    store: Store,
    settings: ProjectSettings,
    keys: KeyRing,
    *,
    reason: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> list[ImportResult]:
    """Re-validate open quarantined records against the current taxonomy.

    Records that now pass are stored (same event ids, so replay is idempotent); records that
    still fail are quarantined again with their current reason. The replayed entries are
    marked 'replayed'. Rows that could not be parsed at all (no record) stay open: fix the
    file and import it again."""
    now = now or utcnow()
    rows = store.rows(
        "SELECT q_id, source, row_number, record FROM quarantine WHERE status = 'open'"
        " AND record IS NOT NULL AND (? IS NULL OR reason = ?) ORDER BY q_id",
        [reason, reason],
    )
    by_source: dict[str, list[tuple[int, int | None, dict[str, object]]]] = {}
    for q_id, source, row_number, record in rows:
        by_source.setdefault(source or "replay", []).append((q_id, row_number, json.loads(record)))
    results = []
    with tempfile.TemporaryDirectory(prefix="microseg-replay-") as tmp:
        for source, items in by_source.items():
            path = Path(tmp) / "quarantine.jsonl"
            with path.open("w") as fh:
                for _, _, rec in items:
                    fh.write(json.dumps({k: v for k, v in rec.items() if v is not None}) + "\n")
            ids = [q_id for q_id, _, _ in items]
            # Close the entries first: a record that still fails is quarantined again by the
            # import, which skips rows already open for the same source/row/reason.
            store.execute(
                "UPDATE quarantine SET status = 'replayed', resolved_at = ? WHERE list_contains(?, q_id)",
                [now, ids],
            )
            spec = SourceSpec(format="jsonl")
            try:
                result = import_events(
                    store,
                    settings,
                    keys,
                    path,
                    spec,
                    source_name=source,
                    progress=progress,
                    now=now,
                    close_reparsed=False,  # the replay file is not the source's file
                )
            except BaseException:
                store.execute(
                    "UPDATE quarantine SET status = 'open', resolved_at = NULL WHERE list_contains(?, q_id)",
                    [ids],
                )
                raise
            # New entries point at the line of the replay file; restore the original row numbers.
            store.execute(
                "UPDATE quarantine SET row_number = m.orig FROM (SELECT unnest(?) AS line,"
                " unnest(?) AS orig) m WHERE quarantine.batch_id = ? AND quarantine.row_number = m.line",
                [list(range(1, len(items) + 1)), [r for _, r, _ in items], result.batch_id],
            )
            results.append(result)
    return results
