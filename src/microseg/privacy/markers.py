"""Erasure markers: keyed HMACs of an erased person's id keys, and the import guard.

The event pipeline registers ``ms_erasure_marker`` and calls :func:`quarantine_erased` on its
stage, so re-importing an erased person's events quarantines them (reason
``erased_subject``) instead of recreating the profile. Light on imports on purpose: the
ingest pipeline depends on this module.
"""

from __future__ import annotations

import contextlib

import duckdb
import pyarrow as pa
from sqlglot import exp

from microseg.privacy.crypto import KeyRing
from microseg.store import Store
from microseg.store import sql as q

MARKER_KIND = "erased"


# -- markers ------------------------------------------------------------------------------------
def marker(keys: KeyRing, id_key: str) -> str:
    """The erasure marker of an id key (keyed HMAC; the key itself is not recoverable)."""
    return keys.token(id_key, MARKER_KIND)


def all_markers(store: Store) -> list[str]:
    """Every erasure marker (the fast event check refuses events carrying them)."""
    return [str(r[0]) for r in store.rows("SELECT marker FROM erasure_markers")]


def is_erased(store: Store, keys: KeyRing, id_keys: list[str]) -> set[str]:
    """The id keys among ``id_keys`` that belong to an erased subject."""
    if not id_keys:
        return set()
    by_marker = {marker(keys, k): k for k in id_keys}
    rows = store.rows(
        "SELECT marker FROM erasure_markers WHERE list_contains(?, marker)", [list(by_marker)]
    )
    return {by_marker[str(r[0])] for r in rows}


def register_marker_udf(con: duckdb.DuckDBPyConnection, keys: KeyRing) -> None:
    """``ms_erasure_marker(id_key)`` for the event pipeline's stage (see quarantine_erased)."""

    def fn(values: pa.Array) -> pa.Array:
        return pa.array(
            [None if v is None else marker(keys, v) for v in values.to_pylist()], type=pa.string()
        )

    with contextlib.suppress(duckdb.InvalidInputException, duckdb.CatalogException):
        con.remove_function("ms_erasure_marker")
    con.create_function(  # type: ignore[call-overload]
        "ms_erasure_marker", fn, ["VARCHAR"], "VARCHAR", type="arrow", null_handling="special"
    )


STAGE_ID_COLUMNS = (
    ("user_id", "user_id"),
    ("email", "email_token"),
    ("device_id", "device_id"),
    ("anonymous_id", "anonymous_id"),
)


# event ids and sessions may embed the person's ids too (e.g. "cust-81723-e0")
BLANKED = ("event_id", "session_id")


def quarantine_erased(store: Store, stage: str) -> int:
    """Mark staged events carrying any id of an erased subject as ``erased_subject``.

    Their identifiers (and event / session ids) are blanked in the stage so the quarantine record keeps none of them.
    Needs ``register_marker_udf`` on the connection; a no-op when nobody was erased."""
    if not store.scalar("SELECT count(*) FROM erasure_markers"):
        return 0
    hit = exp.or_(
        *[
            q.func(
                "list_contains",
                exp.Subquery(
                    this=exp.select(q.func("list", q.col("marker"))).from_("erasure_markers")
                ),
                q.func(
                    "ms_erasure_marker",
                    exp.DPipe(this=q.lit(id_type + ":"), expression=q.col(column)),
                ),
            )
            for id_type, column in STAGE_ID_COLUMNS
        ]
    )
    where = exp.and_(exp.Is(this=q.col("_reason"), expression=exp.Null()), exp.Paren(this=hit))
    update = exp.Update(
        this=q.table(stage),
        expressions=[
            exp.EQ(this=q.col("_reason"), expression=q.lit("erased_subject")),
            exp.EQ(this=q.col("_detail"), expression=q.lit("event of an erased data subject")),
            *[
                exp.EQ(this=q.col(c), expression=exp.Null())
                for c in (*BLANKED, *(c for _, c in STAGE_ID_COLUMNS))
            ],
        ],
        where=exp.Where(this=where),
    )
    row = store.execute(update).fetchone()
    return int(row[0]) if row else 0
