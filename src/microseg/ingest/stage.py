"""The stage query of an import: map the source columns, type them, find the first failed
check of every row (its quarantine reason) — one SELECT over the file, all in SQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from microseg.config.models import ProjectSettings, Taxonomy
from microseg.config.sources import FieldMap
from microseg.errors import ImportFileError
from microseg.store import sql as q

EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# A text timestamp that ends in a UTC offset after its time ('+02:00', '-0530', '+05:30:00'),
# in 'Z' or in ' UTC'. (A date alone, '2024-05-25', has no offset: it is a local midnight.)
HAS_OFFSET_RE = r"(Z| UTC|:\d\d(\.\d*)?[+-]\d\d(:?\d\d(:\d\d)?)?)$"
# ... whose offset is one in use on Earth: -12:00 .. +14:00, minutes (seconds) below 60.
VALID_OFFSET_RE = (
    r"(Z| UTC|\+(0\d|1[0-3])(:?[0-5]\d(:[0-5]\d)?)?|\+14(:?00(:00)?)?"
    r"|-(0\d|1[01])(:?[0-5]\d(:[0-5]\d)?)?|-12(:?00(:00)?)?)$"
)
JSON_PATH_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
# Per-import values a reusable stage statement reads from DuckDB variables (set by the two
# statements below) instead of literals, so one file shape always renders to the same text.
SOURCE_VAR = "microseg_stage_source"
FUTURE_LIMIT_VAR = "microseg_stage_future_limit"
SET_SOURCE = "SET VARIABLE microseg_stage_source = ?"
SET_FUTURE_LIMIT = "SET VARIABLE microseg_stage_future_limit = CAST(? AS TIMESTAMP)"


def future_limit(settings: ProjectSettings, now: datetime) -> datetime:
    """Events timestamped after this are quarantined as future_timestamp."""
    return now + timedelta(minutes=settings.ingest.max_future_skew_minutes)


def shape_key(settings: ProjectSettings) -> str:
    """Every setting the stage query depends on (part of its cache key)."""
    return (
        settings.taxonomy.model_dump_json()
        + settings.ingest.model_dump_json()
        + settings.identity.model_dump_json()
    )


def _variable(name: str, type_: str) -> exp.Expr:
    return exp.cast(q.func("getvariable", q.lit(name)), type_)


class StageBuilder:
    """Builds the stage SELECT for one file: mapped, typed and validated columns."""

    def __init__(
        self,
        settings: ProjectSettings,
        fmt: str,
        columns: dict[str, str],
        fields: dict[str, FieldMap],
        literals: tuple[str, datetime] | None = None,
    ) -> None:
        """``literals`` (source name, future limit) are written into the query, for a query
        built for one import only; without them it reads the DuckDB variables that
        :data:`SET_SOURCE` and :data:`SET_FUTURE_LIMIT` set (a reusable statement). DuckDB
        evaluates ``getvariable`` per row: 93 instead of 79 CPU-s for a 10 M-row streamed import."""
        self.settings = settings
        self.tax: Taxonomy = settings.taxonomy
        self.fmt = fmt
        self.columns = columns
        self.fields = fields
        self.literals = literals

    def source_prefix(self) -> exp.Expr:
        """``<source name>:``, the prefix of ids generated from row numbers."""
        if self.literals is not None:
            return q.lit(self.literals[0] + ":")
        return exp.DPipe(this=_variable(SOURCE_VAR, "VARCHAR"), expression=q.lit(":"))

    def generated_event_id(self) -> exp.Expr:
        """``<source name>:<row number>``: the id of an event whose source has no id column
        (re-importing the file gives the same ids)."""
        return exp.DPipe(this=self.source_prefix(), expression=exp.cast(q.col("_row"), "VARCHAR"))

    def future_limit(self) -> exp.Expr:
        """Timestamps after this are quarantined as future_timestamp."""
        if self.literals is not None:
            return exp.cast(q.lit(self.literals[1].isoformat(sep=" ")), "TIMESTAMP")
        return _variable(FUTURE_LIMIT_VAR, "TIMESTAMP")

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
        # An offset after a time must lie in -12:00..+14:00 with minutes < 60 (DuckDB reads
        # '+99:00' or '+12:75' as they come): otherwise the time is invalid (NULL).
        has_offset = q.func("regexp_matches", text, q.lit(HAS_OFFSET_RE))
        impossible = exp.Not(this=q.func("regexp_matches", text, q.lit(VALID_OFFSET_RE)))
        with_offset = q.func(
            "timezone",
            q.lit("UTC"),
            exp.TryCast(
                this=q.func("regexp_replace", text, q.lit(" UTC$"), q.lit("+00:00")),
                to=exp.DataType.build("TIMESTAMPTZ"),
            ),
        )
        checked = exp.Case(ifs=[exp.If(this=impossible, true=exp.Null())], default=with_offset)
        naive = q.try_cast(text, "timestamp")
        local = naive if tz == "UTC" else self._local_to_utc(naive, tz)
        return exp.Case(ifs=[exp.If(this=has_offset, true=checked)], default=local)

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
        return self.generated_event_id()

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
        # copy=False: the builders would otherwise deep-copy the growing tree at every call
        # (quadratic; it was half the import's CPU for a small spool segment)
        inner = inner.select(
            *(
                exp.alias_(
                    self.text(prop) if self._is_text_prop(prop) else self._raw_or_null(prop),
                    f"_raw_{prop}",
                    quoted=True,
                )
                for prop in props
            ),
            copy=False,
        )
        source = (
            reader.args["from_"].this.copy()
            if "from_" in reader.args
            else reader.args["from"].this.copy()
        )
        if self.fmt == "jsonl":
            inner = inner.from_(self._json_source(source).subquery("j", copy=False), copy=False)
            ok = exp.Not(this=exp.Is(this=q.col("_obj"), expression=exp.Null()))
            inner = inner.select(
                exp.alias_(ok, "_json_ok", quoted=True),
                exp.alias_(q.col("line"), "_line", quoted=True),
                copy=False,
            )
        else:
            inner = inner.from_(source, copy=False)
            if reader.args.get("where") is not None:  # a Parquet row range
                inner = inner.where(reader.args["where"].this.copy(), copy=False)

        event_id = (
            q.col("_event_id_raw") if "event_id" in self.fields else self.generated_event_id()
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
                exp.alias_(self._typed_prop(prop, base), prop, quoted=True),
                q.col(f"_raw_{prop}"),
                copy=False,
            )
        reason, detail = self._reason(event_id, props)
        outer = outer.select(
            exp.alias_(reason, "_reason", quoted=True),
            exp.alias_(detail, "_detail", quoted=True),
            copy=False,
        )
        if self.fmt == "jsonl":
            outer = outer.select(q.col("_line"), copy=False)
        return outer.from_(inner.subquery("m", copy=False), copy=False)

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
        checks.append(
            (
                exp.GT(this=ts, expression=self.future_limit()),
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
                if base == "number":  # NaN / Infinity / 1e999 cast to DOUBLE without error
                    checks.append(
                        (
                            exp.and_(is_event, exp.Not(this=q.func("isfinite", typed))),
                            "non_finite_number",
                            exp.DPipe(this=shown, expression=q.lit(" is not a finite number")),
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
