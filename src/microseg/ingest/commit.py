"""Committing one validated batch: quarantine, dedup, sessions, events, identities, ledger.

A batch is read from its *key table*: one row per source row with ``_row``, the event id,
time, ids, id key, session id and quarantine reason. The full rows come from ``rows``:

* materialised (CSV, JSON Lines, or when erasure markers exist): ``rows`` is the stage
  table, which is also the key table;
* streamed (Parquet): only the narrow key table is materialised; ``rows`` is the stage
  SELECT over the file, read again by the events INSERT (and by the quarantine pass when a
  row is invalid). Nothing wide is materialised, so 10 M events fit in little memory.

Either way the same statements decide what is stored, so both give the same result.
Every step runs inside the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlglot import exp

from microseg.config.models import CORE_EVENT_COLUMNS
from microseg.ingest import identity_keys, sessions
from microseg.store import Store, event_ids
from microseg.store import sql as q

NEW = "_ms_new"
HITS = "_ms_hits"
# What the key table holds (the stage has these columns too).
KEY_COLUMNS: tuple[str, ...] = (
    "_row",
    "event_id",
    "ts",
    "user_id",
    "anonymous_id",
    "device_id",
    "email_token",
    "id_key",
    "session_id",
    "_reason",
)
RECORD_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "_ts_raw",
    "user_id",
    "anonymous_id",
    "device_id",
    "email_token",
    "session_id",
)


@dataclass
class Batch:
    """Where a batch's rows are: ``rows`` (a table or a SELECT reading the file with
    ``params`` bound) and ``keys`` (the key table's name)."""

    rows: exp.Expr
    params: list[Any]
    keys: str


@dataclass
class Committed:
    """What the commit did (the caller adds rows the reader rejected before the stage)."""

    rows_staged: int
    inserted: int
    duplicates: int
    reasons: dict[str, int] = field(default_factory=dict)


def keyed_select(stage: exp.Select) -> exp.Select:
    """The stage SELECT plus ``email_token`` (a keyed token: the clear ``_email`` is not
    kept) and ``id_key`` (the highest-priority id), computed in the same pass. Takes ownership
    of ``stage`` (it becomes part of the result)."""
    email = q.col("_email")
    token = exp.Coalesce(
        this=exp.Case(
            ifs=[
                exp.If(
                    this=exp.Not(this=exp.Is(this=email, expression=exp.Null())),
                    true=q.func("ms_email_token", email),
                )
            ]
        ),
        expressions=[q.col("_email_token_in")],
    )
    # copy=False: ``stage`` is consumed here, and copying it is most of the cost of a small import
    tokened = exp.select(
        exp.Star(except_=[q.col("_email")]), exp.alias_(token, "email_token", quoted=True)
    ).from_(stage.subquery("_s", copy=False), copy=False)
    return exp.select(
        exp.Star(), exp.alias_(identity_keys.primary_key_expr(), "id_key", quoted=True)
    ).from_(tokened.subquery("_t", copy=False), copy=False)


def key_table_select(keyed: exp.Select) -> exp.Select:
    """The narrow key table of a streamed batch."""
    return exp.select(*(q.col(c) for c in KEY_COLUMNS)).from_(keyed.subquery("_k"))


def commit(
    store: Store,
    batch: Batch,
    *,
    props: list[str],
    timeout_minutes: float,
    batch_id: str,
    source_name: str,
    now: datetime,
) -> Committed:
    """Quarantine invalid rows, store the new events with their sessions and register
    their identities. Call inside a transaction."""
    counts = {str(k): int(v) for k, v in store.rows(q.cached(_reason_counts, batch.keys))}
    rows_staged = sum(counts.values())
    reasons = {k: v for k, v in counts.items() if k}
    if reasons:  # an all-valid batch skips the (re-)reading quarantine pass
        quarantine_rows(store, batch, batch_id, source_name, props, now)
    valid = counts.get("", 0)
    filtered = _select_new(store, batch.keys, valid, all_valid=not reasons, now=now)
    inserted = valid if not filtered else int(store.scalar("SELECT count(*) FROM _ms_new"))
    computed = sessions.compute_sessions(store, NEW, timeout_minutes)
    _insert_events(store, batch, props, source_name, now, filtered=filtered, computed=computed)
    if computed:
        sessions.update_stored_sessions(store)
        sessions.update_heads(store)
    identity_keys.register(store, NEW, now)
    return Committed(rows_staged, inserted, valid - inserted, reasons)


def _reason_counts(keys: str) -> exp.Expr:
    """Rows of the key table by quarantine reason ('' for valid rows)."""
    return (
        exp.select(
            exp.Coalesce(this=q.col("_reason"), expressions=[q.lit("")]),
            exp.Count(this=exp.Star()),
        )
        .from_(q.table(keys))
        .group_by(q.lit(1))
    )


def cleanup(store: Store) -> None:
    """Drop the commit's temp tables and views (after success or failure)."""
    for name in (NEW, HITS):
        drop_relation(store, name)
    sessions.drop(store)


def drop_relation(store: Store, name: str) -> None:
    """Drop a temp table or view of ours, whichever exists under ``name``."""
    kind = store.scalar(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [name]
    )
    if kind is not None:
        what = "VIEW" if "VIEW" in str(kind).upper() else "TABLE"
        store.execute(q.cached(q.drop, name, what))


# -- quarantine -------------------------------------------------------------------------------
def quarantine_rows(
    store: Store, batch: Batch, batch_id: str, source_name: str, props: list[str], now: datetime
) -> None:
    """Invalid rows go to quarantine with the mapped record (email only as token)."""
    pairs: list[exp.Expr] = []
    for name in RECORD_FIELDS:
        key = "timestamp" if name == "_ts_raw" else name
        pairs.extend([q.lit(key), q.col(name)])
    for prop in props:
        pairs.extend([q.lit(prop), q.col(f"_raw_{prop}")])
    select = (
        exp.select(
            q.lit(batch_id),
            q.lit(source_name),
            q.col("_row"),
            q.col("_reason"),
            q.col("_detail"),
            q.func("json_object", *pairs),
            exp.cast(q.lit(now.isoformat(sep=" ")), "TIMESTAMP"),
        )
        .from_(_rows_from(batch, "r"))
        .where(exp.Not(this=exp.Is(this=q.col("_reason"), expression=exp.Null())))
    )
    # Re-importing a file must not quarantine the same bad row twice.
    known = exp.Exists(
        this=exp.select(q.lit(1))
        .from_(exp.Table(this=q.ident("quarantine"), alias=exp.TableAlias(this=q.ident("o"))))
        .where(
            exp.and_(
                exp.EQ(this=q.col("status", "o"), expression=q.lit("open")),
                exp.EQ(this=q.col("source", "o"), expression=q.lit(source_name)),
                exp.EQ(this=q.col("row_number", "o"), expression=q.col("_row")),
                exp.EQ(this=q.col("reason", "o"), expression=q.col("_reason")),
            )
        )
    )
    select = select.where(exp.Not(this=known))
    columns = ("batch_id", "source", "row_number", "reason", "detail", "record", "quarantined_at")
    insert = exp.Insert(
        this=exp.Schema(this=q.table("quarantine"), expressions=[q.ident(c) for c in columns]),
        expression=select,
    )
    store.execute(insert, batch.params)


def _rows_from(batch: Batch, alias: str) -> exp.Expr:
    """The batch's full rows as a FROM item named ``alias``."""
    if isinstance(batch.rows, exp.Table):
        return exp.Table(this=batch.rows.this.copy(), alias=exp.TableAlias(this=q.ident(alias)))
    assert isinstance(batch.rows, exp.Select)
    return batch.rows.subquery(alias)


# -- dedup --------------------------------------------------------------------------------------
def _select_new(store: Store, keys: str, valid: int, *, all_valid: bool, now: datetime) -> bool:
    """Make ``_ms_new``: the key rows of valid events whose id is new (not stored, not
    earlier in the batch). Returns whether it differs from "every key row"."""
    # Repeated ids within the batch: a hash-distinct count proves there are none (equal
    # counts cannot hide a repeat); otherwise the exact first-occurrence window decides.
    repeats = valid and int(store.scalar(q.cached(_repeated_ids, keys)) or 0)
    # Ids already stored: the batch's ids are claimed in the event-id index (a superset of
    # the stored ids, see store.event_ids). Only ids it knew already are looked for in
    # events, and only in the rows received since they were first claimed.
    hits = 0
    if valid:
        claim = store.event_ids.claim(store, q.cached(_batch_hashes, keys), now)
        if claim.known:
            store.execute(q.cached(_stored_hits, keys), [claim.confirm_since])
            hits = int(store.scalar("SELECT count(*) FROM _ms_hits"))
    filtered = bool(repeats or hits or not all_valid)
    drop_relation(store, NEW)
    store.execute(q.cached(_new_events, keys, bool(repeats), bool(hits)))
    return filtered


def _batch_hashes(keys: str) -> exp.Expr:
    """The distinct index keys of the batch's valid ids, in order."""
    h = event_ids.id_hash(q.col("event_id"))
    return (
        exp.select(exp.alias_(h, "h", quoted=True))
        .distinct()
        .from_(q.table(keys))
        .where(exp.Is(this=q.col("_reason"), expression=exp.Null()))
        .order_by(q.lit(1))
    )


def _repeated_ids(keys: str) -> exp.Expr:
    """How many valid rows of the key table repeat an earlier row's event id (0: none)."""
    return (
        exp.select(
            exp.Sub(
                this=exp.Count(this=q.col("event_id")),
                expression=exp.Count(
                    this=exp.Distinct(expressions=[q.func("hash", q.col("event_id"))])
                ),
            )
        )
        .from_(q.table(keys))
        .where(exp.Is(this=q.col("_reason"), expression=exp.Null()))
    )


def _stored_hits(keys: str) -> exp.Expr:
    """``_ms_hits``: the batch's event ids that are stored, looked for in the rows received
    at or after the bound parameter (DuckDB skips the row groups received before it)."""
    recent = exp.GTE(this=q.col("received_at"), expression=exp.Placeholder())
    batch_ids = exp.Subquery(this=exp.select(q.col("event_id")).from_(q.table(keys)))
    return q.create_temp(
        HITS,
        exp.select(q.col("event_id"))
        .from_("events")
        .where(exp.and_(recent, exp.In(this=q.col("event_id"), query=batch_ids)))
        .distinct(),
    )


def _new_events(keys: str, repeats: bool, hits: bool) -> exp.Expr:
    """``_ms_new``: the valid key rows, without later repeats of an id in the batch
    (``repeats``) and ids already stored (``hits``, from ``_ms_hits``); a view when nothing is
    dropped (no copy of the key rows)."""
    new = (
        exp.select(*(q.col(c) for c in KEY_COLUMNS if c != "_reason"))
        .from_(q.table(keys))
        .where(exp.Is(this=q.col("_reason"), expression=exp.Null()))
    )
    if repeats:
        first = exp.Window(
            this=exp.RowNumber(),
            partition_by=[q.col("event_id")],
            order=exp.Order(expressions=[exp.Ordered(this=q.col("_row"))]),
        )
        new = new.qualify(exp.EQ(this=first, expression=q.lit(1)))
    if hits:
        seen = exp.select(q.col("event_id")).from_(q.table(HITS))
        new = new.where(exp.Not(this=exp.In(this=q.col("event_id"), query=exp.Subquery(this=seen))))
    return q.create_temp(NEW, new, "TABLE" if repeats or hits else "VIEW", replace=False)


# -- events -------------------------------------------------------------------------------------
def _insert_events(
    store: Store,
    batch: Batch,
    props: list[str],
    source_name: str,
    now: datetime,
    *,
    filtered: bool,
    computed: bool,
) -> None:
    """Insert the new events, their session starts joined in by ``_row`` (one pass, no UPDATE).

    The join keeps only the rows of ``_ms_new``; without filtering or computed sessions every
    row is inserted as read (no join). A materialised stage gets the same statement every
    time, with the receive time and source as named parameters (:func:`q.cached`); a streamed
    batch's SELECT binds the file's parameters by position, so it takes them as literals."""
    received_at = now.isoformat(sep=" ")
    if isinstance(batch.rows, exp.Table):
        text = q.cached(_insert_from_table, batch.rows.name, tuple(props), filtered, computed)
        store.execute(text, {"received_at": received_at, "source": source_name})
        return
    rows = _rows_from(batch, "r")
    insert = _insert(rows, props, filtered, computed, q.lit(received_at), q.lit(source_name))
    store.execute(insert, batch.params)


def _insert_from_table(
    table: str, props: tuple[str, ...], filtered: bool, computed: bool
) -> exp.Expr:
    rows = exp.Table(this=q.ident(table), alias=exp.TableAlias(this=q.ident("r")))
    received_at, source = exp.Placeholder(this="received_at"), exp.Placeholder(this="source")
    return _insert(rows, list(props), filtered, computed, received_at, source)


def _insert(
    rows: exp.Expr,
    props: list[str],
    filtered: bool,
    computed: bool,
    received_at: exp.Expr,
    source: exp.Expr,
) -> exp.Expr:
    """``INSERT INTO events`` from ``rows`` (a FROM item aliased ``r``)."""
    joined = filtered or computed
    session: exp.Expr = q.col("session_id", "r")
    if joined:  # the continued session's name, the row's own, or its computed session's
        start, name = q.col("_start", "j"), q.col("_name", "j")
        session = exp.Case(
            ifs=[
                exp.If(this=exp.Not(this=exp.Is(this=name, expression=exp.Null())), true=name),
                exp.If(this=exp.Is(this=start, expression=exp.Null()), true=session),
            ],
            default=sessions.session_name(q.col("id_key", "r"), start),
        )
    values: list[exp.Expr] = []
    for c in [*CORE_EVENT_COLUMNS, *props]:
        if c == "received_at":
            value: exp.Expr = exp.cast(received_at, "TIMESTAMP")
        elif c == "source":
            value = source
        elif c == "session_id":
            value = session
        else:
            value = q.col(c, "r")
        values.append(exp.alias_(value, c, quoted=True))
    select = exp.select(*values).from_(rows)
    if joined:
        select = select.join(
            sessions.final_sessions(NEW, computed).subquery("j"),
            on=exp.EQ(this=q.col("_row", "r"), expression=q.col("_row", "j")),
            join_type="INNER",
        )
    return exp.Insert(
        this=exp.Schema(
            this=q.table("events"), expressions=[q.ident(c) for c in [*CORE_EVENT_COLUMNS, *props]]
        ),
        expression=select,
    )
