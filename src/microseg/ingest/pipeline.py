"""Bulk event import: read a file, map, validate, quarantine, dedupe, insert — all in SQL.

Every row read ends in exactly one place: the event store, the quarantine (with a reason
code), or the duplicate count (same event id already stored or earlier in the batch).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec, detect_format, resolve_fields
from microseg.console import Progress, SilentProgress
from microseg.errors import ImportFileError, display_path
from microseg.ingest import commit, linebreaks, reader, stage
from microseg.ingest import rejects as rejects_mod
from microseg.ingest.stage import StageBuilder
from microseg.privacy.crypto import KeyRing, normalise_email
from microseg.privacy.markers import quarantine_erased, register_marker_udf
from microseg.store import Store, utcnow
from microseg.store import sql as q

STAGE = "_ms_stage"
KEYS = "_ms_batch_keys"
# Files up to this size reuse a cached stage statement (per-import values read from DuckDB
# variables, evaluated per row); larger ones get a query of their own with literals.
CACHED_STAGE_MAX_BYTES = 16 * 2**20
PARQUET_CHUNK_ROWS = 10_000_000  # larger Parquet files are imported range by range
# Parquet batches are streamed (narrow key table + second read of the file) when the range
# has at least one row group per DuckDB thread, so that the second read is parallel; a file
# of one big row group is read once into the stage instead (its later scans are parallel).
# True / False force one shape (tests compare them).
STREAM_PARQUET: bool | None = None
TOKEN_CACHE_SIZE = 200_000  # emails remembered by the token function (bounded memory)


@dataclass
class ImportResult:
    """What one import did; rows_read == inserted + duplicates + quarantined."""

    batch_id: str
    source: str
    rows_read: int
    inserted: int
    duplicates: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


# ----------------------------------------------------------------------------- import
def _register_token_udf(con: duckdb.DuckDBPyConnection, keys: KeyRing) -> None:
    """``ms_email_token(email)``: the keyed token of a normalised email.

    Tokens are remembered per source value while the function is registered (one import
    range): a person's email repeats on their events, and a streamed batch reads it twice."""
    cache: dict[str, str] = {}

    def tokenise(values: pa.Array) -> pa.Array:
        out: list[str | None] = []
        for v in values.to_pylist():
            if v is None:
                out.append(None)
                continue
            token = cache.get(v)
            if token is None:
                if len(cache) >= TOKEN_CACHE_SIZE:
                    cache.clear()
                token = cache[v] = keys.token(normalise_email(v))
            out.append(token)
        return pa.array(out, type=pa.string())

    with contextlib.suppress(duckdb.InvalidInputException, duckdb.CatalogException):
        con.remove_function("ms_email_token")
    con.create_function(  # type: ignore[call-overload]  # the stubs miss arrow UDF typing
        "ms_email_token", tokenise, ["VARCHAR"], "VARCHAR", type="arrow", null_handling="special"
    )


def import_events(
    store: Store,
    settings: ProjectSettings,
    keys: KeyRing,
    path: str | Path,
    spec: SourceSpec | None = None,
    *,
    source_name: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    chunk_rows: int = PARQUET_CHUNK_ROWS,
    close_reparsed: bool = True,
) -> ImportResult:
    """Import one CSV / JSON Lines / Parquet file of events into the store.

    Parquet files larger than ``chunk_rows`` are imported in consecutive row ranges, each
    validated and committed on its own (bounded memory; sessions and dedup continue across
    ranges as they do across imports, so a re-run after a crash stores nothing twice).

    A CSV / JSON Lines import is taken as the whole of ``source_name``: its lines that parse
    now close their open unparsable-line entries (``close_reparsed=False`` for imports of
    other files under the source's name, e.g. a quarantine replay)."""
    progress = progress or SilentProgress()
    spec = spec or SourceSpec()
    path = Path(path)
    shown = display_path(path)
    if not path.exists():
        raise ImportFileError(f"{shown}: file not found")
    if path.stat().st_size == 0:
        raise ImportFileError(f"{shown}: file is empty")
    fmt = detect_format(path, spec.format)
    source_name = source_name or path.name
    now = now or utcnow()
    total = reader.parquet_rows(path) if fmt == "parquet" else None
    if total is None or total <= chunk_rows:
        return _import_range(
            store, settings, keys, path, spec, fmt, source_name, progress, now, None, close_reparsed
        )
    began = time.perf_counter()
    results = []
    for lo in range(0, total, chunk_rows):
        results.append(
            _import_range(
                store,
                settings,
                keys,
                path,
                spec,
                fmt,
                source_name,
                progress,
                now,
                rows=(lo, min(lo + chunk_rows, total)),
            )
        )
    combined = _combine(results)
    combined.seconds = time.perf_counter() - began
    return combined


def _combine(results: list[ImportResult]) -> ImportResult:
    reasons: dict[str, int] = {}
    for r in results:
        for reason, n in r.reasons.items():
            reasons[reason] = reasons.get(reason, 0) + n
    first = results[0]
    return ImportResult(
        batch_id=first.batch_id,
        source=first.source,
        rows_read=sum(r.rows_read for r in results),
        inserted=sum(r.inserted for r in results),
        duplicates=sum(r.duplicates for r in results),
        quarantined=sum(r.quarantined for r in results),
        reasons=reasons,
    )


def _import_range(
    store: Store,
    settings: ProjectSettings,
    keys: KeyRing,
    path: Path,
    spec: SourceSpec,
    fmt: str,
    source_name: str,
    progress: Progress,
    now: datetime,
    rows: tuple[int, int] | None = None,
    close_reparsed: bool = False,
) -> ImportResult:
    """Import the whole file, or rows [lo, hi) of a Parquet file, as one batch."""
    started = time.perf_counter()
    with linebreaks.cleaned(path, fmt, spec.encoding, spec.header) as text:
        result = _import_batch(
            store,
            settings,
            keys,
            path,
            text,
            spec,
            fmt,
            source_name,
            progress,
            now,
            rows,
            close_reparsed=close_reparsed and rows is None and fmt in {"csv", "jsonl"},
        )
    result.seconds = time.perf_counter() - started
    return result


def _import_batch(
    store: Store,
    settings: ProjectSettings,
    keys: KeyRing,
    path: Path,
    text: linebreaks.TextSource,
    spec: SourceSpec,
    fmt: str,
    source_name: str,
    progress: Progress,
    now: datetime,
    rows: tuple[int, int] | None,
    *,
    close_reparsed: bool,
) -> ImportResult:
    """One batch read from ``text.path`` (``path`` itself or its cleaned copy)."""
    shown = display_path(path)
    batch_id = uuid.uuid4().hex[:16]

    label = path.name if rows is None else f"{path.name} rows {rows[0]:,}-{rows[1]:,}"
    progress.start(f"import {label}", total=2)
    try:
        store.ensure_columns("events", settings.taxonomy.property_columns())
        store.execute("DROP TABLE IF EXISTS _ms_rejects")
        store.execute("DROP TABLE IF EXISTS _ms_reject_scans")
        source, params = reader.reader(text.path, fmt, spec, rows)
        columns = reader.describe(store, source, params)
        if fmt == "jsonl":
            source_columns = reader.json_keys(store, source, params)
        else:
            source_columns = [c for c in columns if c != "file_row_number"]
        fields = resolve_fields(spec, source_columns, list(settings.taxonomy.property_columns()))
        progress.update(note=f"read + validate {path.name}")
        with store.lock:
            _register_token_udf(store.con, keys)
            register_marker_udf(store.con, keys)  # erased subjects' events -> quarantine
            streamed = _streamed(store, path, fmt, rows)
            limit = stage.future_limit(settings, now)
            if streamed or text.path.stat().st_size > CACHED_STAGE_MAX_BYTES:
                # a query of its own, with this import's values as literals
                builder = StageBuilder(settings, fmt, columns, fields, (source_name, limit))
            else:  # the cached statement reads them from DuckDB variables
                builder = StageBuilder(settings, fmt, columns, fields)
                store.execute(stage.SET_SOURCE, [source_name])
                store.execute(stage.SET_FUTURE_LIMIT, [limit])
            batch = _stage(store, builder, source, params, streamed, shown)
            rejects = reader.csv_rejects(store) if fmt in {"csv", "jsonl"} else []
            rejects = sorted(rejects + text.rejects)
            progress.update(note="store")
            with store.transaction():
                if batch.keys == STAGE:
                    quarantine_erased(store, STAGE)
                done = commit.commit(
                    store,
                    batch,
                    props=list(settings.taxonomy.property_columns()),
                    timeout_minutes=settings.sessions.timeout_minutes,
                    batch_id=batch_id,
                    source_name=source_name,
                    now=now,
                )
                result = _record(store, done, rejects, batch_id, source_name, shown, spec, now)
                if close_reparsed:
                    _resolve_reparsed(store, batch, fmt, rejects, batch_id, source_name, now)
    finally:
        progress.stop()
        commit.cleanup(store)
        store.execute("DROP TABLE IF EXISTS _ms_stage")
        store.execute("DROP TABLE IF EXISTS _ms_batch_keys")
    return result


def _resolve_reparsed(
    store: Store,
    batch: commit.Batch,
    fmt: str,
    rejects: list[tuple[int, str, str]],
    batch_id: str,
    source_name: str,
    now: datetime,
) -> None:
    """A full re-import of a text source closes the entries of its lines that parse now."""
    unparsed: list[int] | None = None
    if fmt == "jsonl" and not rejects:  # rows are the file's lines
        unparsed = [int(r[0]) for r in store.rows(q.cached(_unparsed_rows, batch.keys))]
    closed = rejects_mod.resolve_reparsed(
        store,
        source_name=source_name,
        batch_id=batch_id,
        rejected_lines=[line for line, _, _ in rejects],
        unparsed_rows=unparsed,
        now=now,
    )
    if closed:
        store.audit(
            "import", "quarantine_resolved", source_name, {"batch_id": batch_id, "closed": closed}
        )


def _unparsed_rows(keys: str) -> exp.Expr:
    return (
        exp.select(q.col("_row"))
        .from_(q.table(keys))
        .where(exp.EQ(this=q.col("_reason"), expression=q.lit("malformed_json")))
    )


def _streamed(store: Store, path: Path, fmt: str, rows: tuple[int, int] | None) -> bool:
    """Whether to stream this Parquet batch (see STREAM_PARQUET). Never when someone was
    erased: the erasure guard updates a materialised stage."""
    if fmt != "parquet" or STREAM_PARQUET is False:
        return False
    if store.scalar("SELECT count(*) FROM erasure_markers"):
        return False
    if STREAM_PARQUET:
        return True
    threads = int(store.scalar("SELECT current_setting('threads')") or 1)
    return reader.row_groups(path, rows) >= threads


class StageStatements:
    """Rendered stage statements by file shape (bounded, least recently used out).

    The HTTP collector imports a small spool segment every second or so, each of the same
    shape: building and rendering its ~2,000-node stage tree cost ~40 ms of the importer's
    CPU (holding the GIL) and left ~10,000 objects in reference cycles (sqlglot's parent
    links), which only a stop-the-world collection frees. Per-import values (the source
    name, the future-timestamp limit) are DuckDB variables, so the text is reusable."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.hits = 0
        self._lock = threading.Lock()
        self._texts: OrderedDict[tuple[Any, ...], str] = OrderedDict()

    def get(self, builder: StageBuilder, source: str) -> str:
        """``CREATE TEMP TABLE _ms_stage AS <stage select>`` for this builder and reader."""
        key = (
            stage.shape_key(builder.settings),
            builder.fmt,
            tuple(builder.columns.items()),
            tuple((k, f.model_dump_json()) for k, f in sorted(builder.fields.items())),
            source,
        )
        with self._lock:
            text = self._texts.get(key)
            if text is not None:
                self._texts.move_to_end(key)
                self.hits += 1
                return text
        keyed = commit.keyed_select(builder.stage_select(q.parse_static(source)))
        text = q.render(q.create_temp(STAGE, keyed))
        with self._lock:
            self._texts[key] = text
            while len(self._texts) > self.size:
                self._texts.popitem(last=False)
        return text


STAGE_STATEMENTS = StageStatements()


def _stage(
    store: Store,
    builder: StageBuilder,
    source: str,
    params: list[Any],
    streamed: bool,
    shown: str,
) -> commit.Batch:
    """Read and validate the file once into a temp table.

    A streamed Parquet batch keeps only the narrow key table and the INSERT reads the file
    again: cheaper than holding every column of millions of rows. Otherwise (CSV / JSON
    Lines: read once for their reject tables and row numbers; Parquet in few row groups;
    batches that may hold erased subjects, whose guard updates the stage) the whole stage
    is kept. A builder without literals gets its statement from :data:`STAGE_STATEMENTS`."""
    keyed: exp.Select | None = None
    statement: exp.Expr | str
    if builder.literals is None:
        statement = STAGE_STATEMENTS.get(builder, source)
    else:
        keyed = commit.keyed_select(builder.stage_select(q.parse_static(source)))
        statement = (
            q.create_temp(KEYS, commit.key_table_select(keyed))
            if streamed
            else q.create_temp(STAGE, keyed)
        )
    try:
        store.execute(statement, params)
    except duckdb.Error as exc:
        raise ImportFileError(f"{shown}: {reader.explain_read_error(exc)}") from None
    if streamed:
        assert keyed is not None  # a streamed batch always has literals
        return commit.Batch(rows=keyed, params=params, keys=KEYS)
    return commit.Batch(rows=q.table(STAGE), params=[], keys=STAGE)


def _record(
    store: Store,
    done: commit.Committed,
    rejects: list[tuple[int, str, str]],
    batch_id: str,
    source_name: str,
    shown: str,
    spec: SourceSpec,
    now: datetime,
) -> ImportResult:
    """Quarantine the rows the reader rejected, then write the batch row and the audit."""
    reasons = dict(done.reasons)
    for reason, n in rejects_mod.quarantine_rejects(
        store, rejects, batch_id, source_name, now
    ).items():
        reasons[reason] = reasons.get(reason, 0) + n
    quarantined = sum(reasons.values())
    rows_read = done.rows_staged + len(rejects)
    store.execute(
        "INSERT INTO import_batches VALUES (?, 'events', ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            batch_id,
            shown,
            rows_read,
            done.inserted,
            done.duplicates,
            quarantined,
            now,
            utcnow(),
            spec.model_dump_json(),
        ],
    )
    store.audit(
        "import",
        "import_events",
        shown,
        {"batch_id": batch_id, "inserted": done.inserted, "quarantined": quarantined},
    )
    return ImportResult(
        batch_id,
        source_name,
        rows_read,
        done.inserted,
        done.duplicates,
        quarantined,
        dict(sorted(reasons.items())),
    )


def record_json(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str)
