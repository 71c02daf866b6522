"""Lines a text import could not parse: their quarantine entries, opened and closed.

The reader's rejects (and the lines :mod:`microseg.ingest.linebreaks` blanked) have no
record to replay: the fix is to correct the file and import it again. When the same source
is imported again in full and a line that was quarantined as unparsable now parses, its
open entry is closed (status ``replayed``, ``resolved_at`` set): the row is stored now, or
quarantined afresh with a replayable record under its current reason.
"""

from __future__ import annotations

from datetime import datetime

from microseg.store import Store

# Entries located by the reader's line number (CSV and JSON Lines).
LINE_REASONS = ("malformed_row", "invalid_encoding")
# Entries located by row number = line (JSON Lines read no line as a reject in the usual
# case: then every line, blank ones included, is a row, numbered as in the file).
ROW_REASONS = ("malformed_json",)


def reason_of(error_type: str) -> str:
    """The quarantine reason of a reader reject."""
    return "invalid_encoding" if error_type == "INVALID ENCODING" else "malformed_row"


def quarantine_rejects(
    store: Store,
    rejects: list[tuple[int, str, str]],
    batch_id: str,
    source_name: str,
    now: datetime,
) -> dict[str, int]:
    """Quarantine the rejected lines (once per open source / line / reason); their counts."""
    reasons: dict[str, int] = {}
    for line, error_type, text in rejects:
        reason = reason_of(error_type)
        reasons[reason] = reasons.get(reason, 0) + 1
        store.execute(
            "INSERT INTO quarantine (batch_id, source, row_number, reason, detail, record,"
            " quarantined_at) SELECT ?, ?, ?, ?, ?, NULL, ? WHERE NOT EXISTS (SELECT 1 FROM"
            " quarantine WHERE status = 'open' AND source = ? AND row_number = ? AND reason = ?)",
            [
                batch_id,
                source_name,
                line,
                reason,
                f"line {line}: {error_type}: {text[:200]}",
                now,
                source_name,
                line,
                reason,
            ],
        )
    return reasons


def resolve_reparsed(
    store: Store,
    *,
    source_name: str,
    batch_id: str,
    rejected_lines: list[int],
    unparsed_rows: list[int] | None,
    now: datetime,
) -> int:
    """Close the open unparsable-line entries of ``source_name`` (from earlier batches) whose
    line parsed in this full import of the source. ``unparsed_rows``: the rows this import
    found malformed_json (None when row numbers are not line numbers: then those entries
    stay open). Returns how many entries were closed."""
    closed = _close(store, LINE_REASONS, source_name, batch_id, rejected_lines, now)
    if unparsed_rows is not None:
        closed += _close(store, ROW_REASONS, source_name, batch_id, unparsed_rows, now)
    return closed


def _close(
    store: Store,
    reasons: tuple[str, ...],
    source_name: str,
    batch_id: str,
    still_bad: list[int],
    now: datetime,
) -> int:
    params = [now, source_name, batch_id, list(reasons), still_bad]
    where = (
        " WHERE status = 'open' AND source = ? AND batch_id IS DISTINCT FROM ?"
        " AND list_contains(?, reason) AND NOT list_contains(?, row_number)"
    )
    n = int(store.scalar("SELECT count(*) FROM quarantine" + where, params[1:]) or 0)
    if n:
        store.execute("UPDATE quarantine SET status = 'replayed', resolved_at = ?" + where, params)
    return n
