"""Bulk event import: read a file, map, validate, quarantine, dedupe, insert — all in SQL.

Every row read ends in exactly one place: the event store, the quarantine (with a reason
code), or the duplicate count (same event id already stored or earlier in the batch).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from sqlglot import exp

from microseg.config.models import ProjectSettings, Taxonomy
from microseg.config.sources import FieldMap, SourceSpec, detect_format, resolve_fields
from microseg.console import Progress, SilentProgress
from microseg.errors import ImportFileError, display_path
from microseg.ingest import commit
from microseg.privacy.crypto import KeyRing, normalise_email
from microseg.privacy.markers import quarantine_erased, register_marker_udf
from microseg.store import Store, utcnow
from microseg.store import sql as q

STAGE = "_ms_stage"
KEYS = "_ms_batch_keys"
PARQUET_CHUNK_ROWS = 10_000_000  # larger Parquet files are imported range by range
# Parquet batches are streamed (narrow key table + second read of the file) when the range
# has at least one row group per DuckDB thread, so that the second read is parallel; a file
# of one big row group is read once into the stage instead (its later scans are parallel).
# True / False force one shape (tests compare them).
STREAM_PARQUET: bool | None = None
TOKEN_CACHE_SIZE = 200_000  # emails remembered by the token function (bounded memory)
REJECTS = "_ms_rejects"
REJECT_SCANS = "_ms_reject_scans"
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
JSON_PATH_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


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


# ----------------------------------------------------------------------------- reading
def _reader(
    path: Path, fmt: str, spec: SourceSpec, rows: tuple[int, int] | None = None
) -> tuple[exp.Expr, list[Any]]:
    """FROM-clause table function for the file, with the path bound as a parameter.

    ``rows`` = [lo, hi) restricts a Parquet file to a row range (DuckDB skips the row groups
    outside it)."""
    if fmt == "parquet":
        if rows is not None:
            return q.parse_static(
                "SELECT * FROM read_parquet(?, file_row_number = TRUE)"
                " WHERE file_row_number >= ? AND file_row_number < ?"
            ), [str(path), rows[0], rows[1]]
        return q.parse_static("SELECT * FROM read_parquet(?, file_row_number = TRUE)"), [str(path)]
    if fmt == "jsonl":
        # One VARCHAR per line; JSON is parsed in SQL so malformed lines can be quarantined.
        tmpl = (
            "SELECT * FROM read_csv(?, columns = {'line': 'VARCHAR'}, header = FALSE,"
            " delim = ?, quote = '', escape = '', auto_detect = FALSE, encoding = ?,"
            " store_rejects = TRUE, rejects_table = '_ms_rejects',"
            " rejects_scan = '_ms_reject_scans')"
        )
        return q.parse_static(tmpl), [str(path), "\x1f", spec.encoding]
    tmpl = (
        "SELECT * FROM read_csv(?, all_varchar = TRUE, header = ?, encoding = ?,"
        " store_rejects = TRUE, rejects_table = '_ms_rejects', rejects_scan = '_ms_reject_scans')"
    )
    params: list[Any] = [str(path), spec.header, spec.encoding]
    if spec.delimiter:
        tmpl = tmpl[:-1] + ", delim = ?)"
        params.append(spec.delimiter)
    return q.parse_static(tmpl), params


def _describe(store: Store, reader: exp.Expr, params: list[Any]) -> dict[str, str]:
    text = "DESCRIBE " + q.render(reader)
    try:
        rows = store.rows(text, params)
    except duckdb.Error as exc:
        raise ImportFileError(_explain_read_error(exc)) from None
    return {r[0]: r[1] for r in rows}


def _explain_read_error(exc: duckdb.Error) -> str:
    msg = str(exc).splitlines()[0]
    if "unicode" in msg.lower() or "utf" in msg.lower():
        return f"file is not valid UTF-8 ({msg}); set the source's encoding (latin-1, utf-16)"
    return f"cannot read file: {msg}"


def _json_keys(store: Store, reader: exp.Expr, params: list[Any]) -> list[str]:
    inner = q.render(reader)
    text = (
        "SELECT DISTINCT k FROM (SELECT unnest(json_keys(line)) AS k FROM ("
        + inner
        + ") WHERE json_valid(line) AND json_type(line) = 'OBJECT') ORDER BY k"
    )
    return [r[0] for r in store.rows(text, params)]


# ----------------------------------------------------------------------------- mapping
class _Builder:
    """Builds the stage SELECT for one file: mapped, typed and validated columns."""

    def __init__(
        self,
        settings: ProjectSettings,
        fmt: str,
        columns: dict[str, str],
        fields: dict[str, FieldMap],
        source_name: str,
        now: datetime,
    ) -> None:
        self.settings = settings
        self.tax: Taxonomy = settings.taxonomy
        self.fmt = fmt
        self.columns = columns
        self.fields = fields
        self.source_name = source_name
        self.now = now

    # raw access -------------------------------------------------------------------------
    def _source(self, column: str) -> exp.Expr:
        if self.fmt == "jsonl":
            if not set(column) <= JSON_PATH_OK:
                raise ImportFileError(f"JSON column path '{column}' has unsupported characters")
            # `_obj` is the line when it is a JSON object, else NULL (see _json_source).
            return q.func("json_extract_string", q.col("_obj"), q.lit("$." + column))
        return q.col(column)

    def _is_text(self, column: str) -> bool:
        return self.fmt != "parquet" or self.columns.get(column, "VARCHAR") == "VARCHAR"

    def _blank_to_null(self, e: exp.Expr, text: bool) -> exp.Expr:
        if not text:
            return e
        return exp.Nullif(this=exp.Trim(this=e), expression=q.lit(""))

    def raw(self, name: str) -> exp.Expr | None:
        """The mapped value of a canonical field before typing (None when unmapped)."""
        fmap = self.fields.get(name)
        if fmap is None:
            return None
        if fmap.value is not None:
            e: exp.Expr = q.lit(fmap.value)
        else:
            assert fmap.column is not None
            e = self._blank_to_null(self._source(fmap.column), self._is_text(fmap.column))
            if fmap.values:
                as_text = exp.cast(e, "VARCHAR")
                e = exp.Case(
                    ifs=[
                        exp.If(this=exp.EQ(this=as_text, expression=q.lit(k)), true=q.lit(v))
                        for k, v in fmap.values.items()
                    ],
                    default=e if not fmap.prefix else as_text,
                )
            if fmap.prefix:
                e = exp.DPipe(this=q.lit(fmap.prefix), expression=exp.cast(e, "VARCHAR"))
        if fmap.when_missing:
            other = self._blank_to_null(
                self._source(fmap.when_missing), self._is_text(fmap.when_missing)
            )
            e = exp.Case(ifs=[exp.If(this=exp.Is(this=other, expression=exp.Null()), true=e)])
        return e

    # typing -------------------------------------------------------------------------------
    def text(self, name: str) -> exp.Expr:
        e = self.raw(name)
        return exp.cast(exp.Null() if e is None else e, "VARCHAR")

    def identity(self, name: str) -> exp.Expr:
        """An id with blocked placeholder values ('undefined', '0', ...) turned into NULL."""
        e = self.raw(name)
        if e is None:
            return exp.cast(exp.Null(), "VARCHAR")
        value = exp.Trim(this=exp.cast(e, "VARCHAR"))
        blocked = [q.lit(v.lower()) for v in self.settings.identity.blocked_values]
        is_blocked = exp.In(this=exp.Lower(this=value), expressions=blocked)
        return exp.Case(ifs=[exp.If(this=is_blocked, true=exp.Null())], default=value)

    def timestamp(self) -> exp.Expr:
        fmap = self.fields.get("timestamp")
        e = self.raw("timestamp")
        if e is None or fmap is None:
            return exp.cast(exp.Null(), "TIMESTAMP")
        tz = fmap.timezone or self.settings.ingest.default_timezone
        source_type = (
            self.columns.get(fmap.column or "", "VARCHAR") if self.fmt == "parquet" else "VARCHAR"
        )
        if fmap.unit:
            scale = {"s": 1, "ms": 1_000, "us": 1_000_000}[fmap.unit]
            seconds = exp.Div(this=q.try_cast(e, "number"), expression=q.lit(scale))
            return q.func("timezone", q.lit("UTC"), q.func("to_timestamp", seconds))
        if source_type.startswith("TIMESTAMP WITH TIME ZONE"):
            return q.func("timezone", q.lit("UTC"), e)
        if source_type.startswith("TIMESTAMP") or source_type == "DATE":
            naive: exp.Expr = exp.cast(e, "TIMESTAMP")
            return naive if tz == "UTC" else self._local_to_utc(naive, tz)
        text = exp.cast(e, "VARCHAR")
        if fmap.format:
            naive = q.func("try_strptime", text, q.lit(fmap.format))
            return naive if tz == "UTC" else self._local_to_utc(naive, tz)
        # ISO 8601: explicit offsets ('Z', '+02:00', ' UTC') win; naive values are in `tz`.
        has_offset = q.func("regexp_matches", text, q.lit(r"(Z|[+-]\d\d(:?\d\d)?| UTC)$"))
        with_offset = q.func(
            "timezone",
            q.lit("UTC"),
            exp.TryCast(
                this=q.func("regexp_replace", text, q.lit(" UTC$"), q.lit("+00:00")),
                to=exp.DataType.build("TIMESTAMPTZ"),
            ),
        )
        naive = q.try_cast(text, "timestamp")
        local = naive if tz == "UTC" else self._local_to_utc(naive, tz)
        return exp.Case(ifs=[exp.If(this=has_offset, true=with_offset)], default=local)

    @staticmethod
    def _local_to_utc(naive: exp.Expr, tz: str) -> exp.Expr:
        # timezone(tz, naive) reads the wall time in tz -> instant; timezone('UTC', ...) -> naive UTC
        return q.func("timezone", q.lit("UTC"), q.func("timezone", q.lit(tz), naive))

    def event_type(self) -> exp.Expr:
        e = self.raw("event_type")
        if e is None:
            return exp.cast(exp.Null(), "VARCHAR")
        value = exp.Lower(this=exp.Trim(this=exp.cast(e, "VARCHAR")))
        return self._canonical(value, self.tax.synonyms("event_type"), lower_keys=True)

    @staticmethod
    def _canonical(value: exp.Expr, synonyms: dict[str, str], lower_keys: bool = False) -> exp.Expr:
        if not synonyms:
            return value
        key = value if lower_keys else exp.Lower(this=exp.Trim(this=value))
        return exp.Case(
            ifs=[
                exp.If(this=exp.EQ(this=key, expression=q.lit(k)), true=q.lit(v))
                for k, v in synonyms.items()
            ],
            default=value,
        )

    def event_id(self) -> exp.Expr:
        if "event_id" in self.fields:
            return self.text("event_id")
        # No id in the source: the file's row number makes re-imports idempotent.
        return exp.DPipe(
            this=q.lit(self.source_name + ":"), expression=exp.cast(q.col("_row"), "VARCHAR")
        )

    def row_number(self) -> exp.Expr:
        if self.fmt == "parquet":
            return exp.Add(this=q.col("file_row_number"), expression=q.lit(1))
        return exp.Window(this=exp.RowNumber())

    # the stage query --------------------------------------------------------------------
    def stage_select(self, reader: exp.Expr) -> exp.Select:
        """Two layers: inner maps/types each field, outer adds the quarantine reason."""
        props = self.tax.property_columns()
        inner = exp.select(
            exp.alias_(self.row_number(), "_row", quoted=True),
            exp.alias_(self.text("event_id"), "_event_id_raw", quoted=True),
            exp.alias_(self.event_type(), "event_type", quoted=True),
            exp.alias_(self._ts_raw(), "_ts_raw", quoted=True),
            exp.alias_(self.timestamp(), "ts", quoted=True),
            exp.alias_(self.identity("user_id"), "user_id", quoted=True),
            exp.alias_(self.identity("anonymous_id"), "anonymous_id", quoted=True),
            exp.alias_(self.identity("device_id"), "device_id", quoted=True),
            exp.alias_(self._email(), "_email", quoted=True),
            exp.alias_(self.text("email_token"), "_email_token_in", quoted=True),
            exp.alias_(self.text("session_id"), "session_id", quoted=True),
        )
        for prop in props:
            inner = inner.select(
                exp.alias_(
                    self.text(prop) if self._is_text_prop(prop) else self._raw_or_null(prop),
                    f"_raw_{prop}",
                    quoted=True,
                )
            )
        source = (
            reader.args["from_"].this.copy()
            if "from_" in reader.args
            else reader.args["from"].this.copy()
        )
        if self.fmt == "jsonl":
            inner = inner.from_(self._json_source(source).subquery("j"))
            ok = exp.Not(this=exp.Is(this=q.col("_obj"), expression=exp.Null()))
            inner = inner.select(
                exp.alias_(ok, "_json_ok", quoted=True),
                exp.alias_(q.col("line"), "_line", quoted=True),
            )
        else:
            inner = inner.from_(source)
            if reader.args.get("where") is not None:  # a Parquet row range
                inner = inner.where(reader.args["where"].this.copy())

        event_id = (
            q.col("_event_id_raw")
            if "event_id" in self.fields
            else exp.DPipe(
                this=q.lit(self.source_name + ":"), expression=exp.cast(q.col("_row"), "VARCHAR")
            )
        )
        outer = exp.select(
            q.col("_row"),
            exp.alias_(event_id, "event_id", quoted=True),
            q.col("event_type"),
            q.col("ts"),
            q.col("user_id"),
            q.col("anonymous_id"),
            q.col("device_id"),
            q.col("_email"),
            q.col("_email_token_in"),
            q.col("session_id"),
            q.col("_ts_raw"),
        )
        for prop, base in props.items():
            outer = outer.select(
                exp.alias_(self._typed_prop(prop, base), prop, quoted=True), q.col(f"_raw_{prop}")
            )
        reason, detail = self._reason(event_id, props)
        outer = outer.select(
            exp.alias_(reason, "_reason", quoted=True), exp.alias_(detail, "_detail", quoted=True)
        )
        if self.fmt == "jsonl":
            outer = outer.select(q.col("_line"))
        return outer.from_(inner.subquery("m"))

    @staticmethod
    def _json_source(source: exp.Expr) -> exp.Select:
        """Lines plus ``_obj``: the line if it is a JSON object, else NULL.

        The CASE keeps malformed lines away from json_extract_string (which raises on them),
        so they can be quarantined as 'malformed_json' instead of failing the whole file."""
        line = q.col("line")
        is_object = exp.EQ(this=q.func("json_type", line), expression=q.lit("OBJECT"))
        obj = exp.Case(
            ifs=[
                exp.If(
                    this=q.func("json_valid", line),
                    true=exp.Case(ifs=[exp.If(this=is_object, true=line)]),
                )
            ]
        )
        return exp.select(line, exp.alias_(obj, "_obj", quoted=True)).from_(source)

    def _ts_raw(self) -> exp.Expr:
        """The source timestamp as read: text, or the typed value of a Parquet timestamp
        column (formatting millions of typed timestamps as text only to test them for NULL
        is a large share of a Parquet import)."""
        fmap = self.fields.get("timestamp")
        if self.fmt == "parquet" and fmap is not None and fmap.column and not fmap.unit:
            kind = self.columns.get(fmap.column, "VARCHAR")
            if kind.startswith("TIMESTAMP") or kind == "DATE":
                raw = self.raw("timestamp")
                assert raw is not None
                return raw
        return self.text("timestamp")

    def _is_text_prop(self, prop: str) -> bool:
        fmap = self.fields.get(prop)
        return (
            fmap is None
            or fmap.value is not None
            or fmap.column is None
            or self._is_text(fmap.column)
            or bool(fmap.prefix or fmap.values)
        )

    def _raw_or_null(self, prop: str) -> exp.Expr:
        e = self.raw(prop)
        return exp.cast(exp.Null(), "VARCHAR") if e is None else e

    def _email(self) -> exp.Expr:
        return exp.Lower(this=self.identity("email"))

    def _typed_prop(self, prop: str, base: str) -> exp.Expr:
        declaring = self.tax.events_declaring(prop)
        raw = q.col(f"_raw_{prop}")
        value: exp.Expr
        if base == "string":
            value = exp.cast(raw, "VARCHAR")
            taxonomies = {self._constraints(e, prop).taxonomy for e in declaring} - {None}
            for name in taxonomies:
                assert name is not None
                value = self._canonical(value, self.tax.synonyms(name))
        elif base == "boolean":
            value = q.try_cast(exp.Lower(this=exp.cast(raw, "VARCHAR")), "boolean")
        else:
            value = q.try_cast(raw, base)
        declared = exp.In(this=q.col("event_type"), expressions=[q.lit(e) for e in declaring])
        return exp.Case(ifs=[exp.If(this=declared, true=value)])

    def _constraints(self, event: str, prop: str) -> Any:
        return self.tax.effective(self.tax.events[event].properties[prop])

    def _reason(self, event_id: exp.Expr, props: dict[str, str]) -> tuple[exp.Expr, exp.Expr]:
        """CASE expressions giving the first failed check's reason code and detail."""
        checks: list[tuple[exp.Expr, str, exp.Expr]] = []
        et = q.col("event_type")
        ts = q.col("ts")

        def is_null(e: exp.Expr) -> exp.Expr:
            return exp.Is(this=e, expression=exp.Null())

        def not_null(e: exp.Expr) -> exp.Expr:
            return exp.Not(this=is_null(e))

        if self.fmt == "jsonl":
            checks.append(
                (
                    exp.Not(this=q.col("_json_ok")),
                    "malformed_json",
                    exp.Substring(this=q.col("_line"), start=q.lit(1), length=q.lit(200)),
                )
            )
        checks.append((is_null(event_id), "missing_event_id", q.lit("event_id is empty")))
        checks.append((is_null(et), "missing_event_type", q.lit("event_type is empty")))
        if not self.tax.allow_unknown_events:
            known = [q.lit(e) for e in self.tax.events]
            cond = exp.Not(this=exp.In(this=et, expressions=known)) if known else exp.true()
            checks.append(
                (cond, "unknown_event_type", exp.DPipe(this=q.lit("event_type="), expression=et))
            )
        checks.append((is_null(q.col("_ts_raw")), "missing_timestamp", q.lit("timestamp is empty")))
        checks.append(
            (
                is_null(ts),
                "invalid_timestamp",
                exp.DPipe(
                    this=q.lit("timestamp="), expression=exp.cast(q.col("_ts_raw"), "VARCHAR")
                ),
            )
        )
        limit = self.now + timedelta(minutes=self.settings.ingest.max_future_skew_minutes)
        checks.append(
            (
                exp.GT(this=ts, expression=exp.cast(q.lit(limit.isoformat(sep=" ")), "TIMESTAMP")),
                "future_timestamp",
                exp.DPipe(this=q.lit("ts="), expression=exp.cast(ts, "VARCHAR")),
            )
        )
        checks.append(
            (
                exp.LT(
                    this=ts,
                    expression=exp.cast(q.lit(self.settings.ingest.min_timestamp), "TIMESTAMP"),
                ),
                "timestamp_too_old",
                exp.DPipe(this=q.lit("ts="), expression=exp.cast(ts, "VARCHAR")),
            )
        )
        no_id = exp.and_(
            *(
                is_null(q.col(c))
                for c in ("user_id", "anonymous_id", "device_id", "_email", "_email_token_in")
            )
        )
        checks.append(
            (no_id, "missing_identity", q.lit("no user_id, email, device_id or anonymous_id"))
        )
        email_bad = exp.and_(
            not_null(q.col("_email")),
            exp.Not(this=q.func("regexp_full_match", q.col("_email"), q.lit(EMAIL_RE))),
        )
        checks.append((email_bad, "invalid_email", q.lit("email is not an address")))
        for prop, base in props.items():
            raw, typed = q.col(f"_raw_{prop}"), q.col(prop)
            shown = exp.DPipe(this=q.lit(f"{prop}="), expression=exp.cast(raw, "VARCHAR"))
            # Events declaring the property with the same constraints share one check each
            # (fewer CASE branches to evaluate per row); event types exclude each other, so
            # the order across groups does not change which reason a row gets.
            groups: dict[tuple[Any, ...], list[str]] = {}
            for event in self.tax.events_declaring(prop):
                spec = self.tax.events[event].properties[prop]
                c = self.tax.effective(spec)
                key = (spec.required, tuple(c.enum) if c.enum else None, c.min, c.max, c.pattern)
                groups.setdefault(key, []).append(event)
            for (required, enum, low, high, pattern), events in groups.items():
                is_event = exp.In(this=et, expressions=[q.lit(e) for e in events])
                what = events[0] if len(events) == 1 else "/".join(events)
                if required:
                    checks.append(
                        (
                            exp.and_(is_event, is_null(raw)),
                            "missing_property",
                            q.lit(f"{what} requires {prop}"),
                        )
                    )
                if base != "string":  # any text is a valid string
                    checks.append(
                        (
                            exp.and_(is_event, not_null(raw), is_null(typed)),
                            "invalid_type",
                            exp.DPipe(this=shown, expression=q.lit(f" is not {base}")),
                        )
                    )
                if enum:
                    allowed = [q.lit(v) for v in enum]
                    checks.append(
                        (
                            exp.and_(
                                is_event,
                                not_null(typed),
                                exp.Not(this=exp.In(this=typed, expressions=allowed)),
                            ),
                            "not_in_enum",
                            shown,
                        )
                    )
                if low is not None and base in {"integer", "number"}:
                    checks.append(
                        (
                            exp.and_(is_event, exp.LT(this=typed, expression=q.lit(low))),
                            "below_minimum",
                            exp.DPipe(this=shown, expression=q.lit(f" < {low:g}")),
                        )
                    )
                if high is not None and base in {"integer", "number"}:
                    checks.append(
                        (
                            exp.and_(is_event, exp.GT(this=typed, expression=q.lit(high))),
                            "above_maximum",
                            exp.DPipe(this=shown, expression=q.lit(f" > {high:g}")),
                        )
                    )
                if pattern and base == "string":
                    checks.append(
                        (
                            exp.and_(
                                is_event,
                                not_null(typed),
                                exp.Not(this=q.func("regexp_full_match", typed, q.lit(pattern))),
                            ),
                            "pattern_mismatch",
                            shown,
                        )
                    )
        reason = exp.Case(ifs=[exp.If(this=cond, true=q.lit(code)) for cond, code, _ in checks])
        detail = exp.Case(ifs=[exp.If(this=cond, true=d) for cond, _, d in checks])
        return reason, detail


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
) -> ImportResult:
    """Import one CSV / JSON Lines / Parquet file of events into the store.

    Parquet files larger than ``chunk_rows`` are imported in consecutive row ranges, each
    validated and committed on its own (bounded memory; sessions and dedup continue across
    ranges as they do across imports, so a re-run after a crash stores nothing twice)."""
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
    total = _parquet_rows(path) if fmt == "parquet" else None
    if total is None or total <= chunk_rows:
        return _import_range(store, settings, keys, path, spec, fmt, source_name, progress, now)
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


def _parquet_rows(path: Path) -> int | None:
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (OSError, pa.ArrowException):
        return None  # not readable as Parquet here: the import reports the real error


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
) -> ImportResult:
    """Import the whole file, or rows [lo, hi) of a Parquet file, as one batch."""
    started = time.perf_counter()
    shown = display_path(path)
    batch_id = uuid.uuid4().hex[:16]

    label = path.name if rows is None else f"{path.name} rows {rows[0]:,}-{rows[1]:,}"
    progress.start(f"import {label}", total=2)
    try:
        store.ensure_columns("events", settings.taxonomy.property_columns())
        store.execute("DROP TABLE IF EXISTS _ms_rejects")
        store.execute("DROP TABLE IF EXISTS _ms_reject_scans")
        reader, params = _reader(path, fmt, spec, rows)
        columns = _describe(store, reader, params)
        if fmt == "jsonl":
            source_columns = _json_keys(store, reader, params)
        else:
            source_columns = [c for c in columns if c != "file_row_number"]
        fields = resolve_fields(spec, source_columns, list(settings.taxonomy.property_columns()))
        builder = _Builder(settings, fmt, columns, fields, source_name, now)
        keyed = commit.keyed_select(builder.stage_select(reader))
        progress.update(note=f"read + validate {path.name}")
        with store.lock:
            _register_token_udf(store.con, keys)
            register_marker_udf(store.con, keys)  # erased subjects' events -> quarantine
            batch = _stage(store, keyed, params, _streamed(store, path, fmt, rows), shown)
            rejects = _csv_rejects(store) if fmt in {"csv", "jsonl"} else []
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
    finally:
        progress.stop()
        commit.cleanup(store)
        store.execute("DROP TABLE IF EXISTS _ms_stage")
        store.execute("DROP TABLE IF EXISTS _ms_batch_keys")
    result.seconds = time.perf_counter() - started
    return result


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
    return _row_groups(path, rows) >= threads


def _row_groups(path: Path, rows: tuple[int, int] | None) -> int:
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


def _stage(
    store: Store, keyed: exp.Select, params: list[Any], streamed: bool, shown: str
) -> commit.Batch:
    """Read and validate the file once into a temp table.

    A streamed Parquet batch keeps only the narrow key table and the INSERT reads the file
    again: cheaper than holding every column of millions of rows. Otherwise (CSV / JSON
    Lines: read once for their reject tables and row numbers; Parquet in few row groups;
    batches that may hold erased subjects, whose guard updates the stage) the whole stage
    is kept."""
    name = KEYS if streamed else STAGE
    select = commit.key_table_select(keyed) if streamed else keyed
    try:
        store.execute(
            q.create_temp(name, select),
            params,
        )
    except duckdb.Error as exc:
        raise ImportFileError(f"{shown}: {_explain_read_error(exc)}") from None
    if streamed:
        return commit.Batch(rows=keyed, params=params, keys=KEYS)
    return commit.Batch(rows=q.table(STAGE), params=[], keys=STAGE)


def _csv_rejects(store: Store) -> list[tuple[int, str, str]]:
    if not store.table_exists(REJECTS):
        return []
    return [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in store.rows(
            "SELECT line, error_type, coalesce(csv_line, '') FROM _ms_rejects ORDER BY line"
        )
    ]


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
    for line, error_type, csv_line in rejects:
        reason = "malformed_row" if error_type != "INVALID ENCODING" else "invalid_encoding"
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
                f"line {line}: {error_type}: {csv_line[:200]}",
                now,
                source_name,
                line,
                reason,
            ],
        )
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
