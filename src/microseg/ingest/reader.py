"""Reading an import file: the table function for each format, its columns, the reader's
rejects (lines it could not parse) and Parquet metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from microseg.config.sources import SourceSpec
from microseg.errors import ImportFileError
from microseg.store import Store

REJECTS = "_ms_rejects"
REJECT_SCANS = "_ms_reject_scans"


def reader(
    path: Path, fmt: str, spec: SourceSpec, rows: tuple[int, int] | None = None
) -> tuple[str, list[Any]]:
    """A fixed ``SELECT * FROM <table function>`` reading the file (parse it with
    :func:`q.parse_static` to build on it), with the path and options bound as parameters.

    ``rows`` = [lo, hi) restricts a Parquet file to a row range (DuckDB skips the row groups
    outside it)."""
    if fmt == "parquet":
        if rows is not None:
            return (
                "SELECT * FROM read_parquet(?, file_row_number = TRUE)"
                " WHERE file_row_number >= ? AND file_row_number < ?"
            ), [str(path), rows[0], rows[1]]
        return "SELECT * FROM read_parquet(?, file_row_number = TRUE)", [str(path)]
    if fmt == "jsonl":
        # One VARCHAR per line; JSON is parsed in SQL so malformed lines can be quarantined.
        tmpl = (
            "SELECT * FROM read_csv(?, columns = {'line': 'VARCHAR'}, header = FALSE,"
            " delim = ?, quote = '', escape = '', auto_detect = FALSE, encoding = ?,"
            " store_rejects = TRUE, rejects_table = '_ms_rejects',"
            " rejects_scan = '_ms_reject_scans')"
        )
        return tmpl, [str(path), "\x1f", spec.encoding]
    tmpl = (
        "SELECT * FROM read_csv(?, all_varchar = TRUE, header = ?, encoding = ?,"
        " store_rejects = TRUE, rejects_table = '_ms_rejects', rejects_scan = '_ms_reject_scans')"
    )
    params: list[Any] = [str(path), spec.header, spec.encoding]
    if spec.delimiter:
        tmpl = tmpl[:-1] + ", delim = ?)"
        params.append(spec.delimiter)
    return tmpl, params


def describe(store: Store, reader: str, params: list[Any]) -> dict[str, str]:
    text = "DESCRIBE " + reader
    try:
        rows = store.rows(text, params)
    except duckdb.Error as exc:
        raise ImportFileError(explain_read_error(exc)) from None
    return {r[0]: r[1] for r in rows}


def explain_read_error(exc: duckdb.Error) -> str:
    msg = str(exc).splitlines()[0]
    if "unicode" in msg.lower() or "utf" in msg.lower():
        return f"file is not valid UTF-8 ({msg}); set the source's encoding (latin-1, utf-16)"
    return f"cannot read file: {msg}"


def json_keys(store: Store, reader: str, params: list[Any]) -> list[str]:
    text = (
        "SELECT DISTINCT k FROM (SELECT unnest(json_keys(line)) AS k FROM ("
        + reader
        + ") WHERE json_valid(line) AND json_type(line) = 'OBJECT') ORDER BY k"
    )
    try:
        return [r[0] for r in store.rows(text, params)]
    except duckdb.Error as exc:
        raise ImportFileError(explain_read_error(exc)) from None


def csv_rejects(store: Store) -> list[tuple[int, str, str]]:
    """``(line, error_type, text)`` of each line the CSV reader rejected, once per line (the
    reader may log a line twice, e.g. from its sniffing pass and its scan)."""
    if not store.table_exists(REJECTS):
        return []
    return [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in store.rows(
            "SELECT line, min(error_type), min(coalesce(csv_line, '')) FROM _ms_rejects"
            " GROUP BY line ORDER BY line"
        )
    ]


def parquet_rows(path: Path) -> int | None:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, pa.ArrowException):
        return None  # not readable as Parquet here: the import reports the real error


def row_groups(path: Path, rows: tuple[int, int] | None) -> int:
    """How many row groups of the Parquet file hold rows of the range (0 if unreadable)."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException):
        return 0
    lo, hi = rows if rows is not None else (0, meta.num_rows)
    n, start = 0, 0
    for i in range(meta.num_row_groups):
        end = start + meta.row_group(i).num_rows
        n += start < hi and end > lo
        start = end
    return n
