"""Identity keys of events and their registration as profiles at import time.

An id key is "<type>:<value>" (user_id, email, device_id, anonymous_id). Every key maps to
exactly one profile in `identities`. Import links keys that arrive on the same event into
one profile when they are new; links between keys already in different profiles are kept
as edges for the resolver (which applies the merge guards).
"""

from __future__ import annotations

from datetime import datetime

from sqlglot import exp

from microseg.store import Store
from microseg.store import sql as q

# Priority order: the first present id of an event is its key.
ID_COLUMNS: tuple[tuple[str, str], ...] = (
    ("user_id", "user_id"),
    ("email", "email_token"),
    ("device_id", "device_id"),
    ("anonymous_id", "anonymous_id"),
)


def key_expr(id_type: str, column: str, table: str | None = None) -> exp.Expr:
    return exp.DPipe(this=q.lit(id_type + ":"), expression=q.col(column, table))


def primary_key_expr(table: str | None = None) -> exp.Expr:
    """CASE picking the highest-priority id of a row as its id key."""
    return exp.Case(
        ifs=[
            exp.If(
                this=exp.Not(this=exp.Is(this=q.col(column, table), expression=exp.Null())),
                true=key_expr(id_type, column, table),
            )
            for id_type, column in ID_COLUMNS
        ]
    )


def update_stage_keys(table: str) -> exp.Expr:
    return exp.Update(
        this=q.table(table),
        expressions=[exp.EQ(this=q.col("id_key"), expression=primary_key_expr())],
    )


def profile_id_expr(key: exp.Expr) -> exp.Expr:
    """Deterministic profile id for a key first seen on its own: p_ + 20 hex of md5."""
    return exp.DPipe(
        this=q.lit("p_"),
        expression=exp.Substring(this=exp.MD5(this=key), start=q.lit(1), length=q.lit(20)),
    )


def keys_table(table: str) -> exp.Expr:
    """``_ms_keys``: one row per (primary key, key) of the events in ``table`` with its first
    and last time."""
    parts = []
    for id_type, column in ID_COLUMNS:
        sel = (
            exp.select(
                exp.alias_(q.col("id_key"), "primary_key", quoted=True),
                exp.alias_(key_expr(id_type, column), "id_key", quoted=True),
                exp.alias_(q.lit(id_type), "id_type", quoted=True),
                exp.alias_(q.col(column), "id_value", quoted=True),
                exp.alias_(q.col("ts"), "ts", quoted=True),
            )
            .from_(q.table(table))
            .where(exp.Not(this=exp.Is(this=q.col(column), expression=exp.Null())))
        )
        parts.append(sel)
    union: exp.Expr = parts[0]
    for p in parts[1:]:
        union = exp.union(union, p, distinct=False)
    pairs = (
        exp.select(
            q.col("primary_key"),
            q.col("id_key"),
            exp.alias_(q.func("any_value", q.col("id_type")), "id_type", quoted=True),
            exp.alias_(q.func("any_value", q.col("id_value")), "id_value", quoted=True),
            exp.alias_(q.func("min", q.col("ts")), "ts", quoted=True),
            exp.alias_(q.func("max", q.col("ts")), "max_ts", quoted=True),
        )
        .from_(exp.Subquery(this=union, alias=exp.TableAlias(this=q.ident("u"))))
        .group_by(q.col("primary_key"), q.col("id_key"))
    )
    return q.create_temp("_ms_keys", pairs)


def register(store: Store, table: str, now: datetime) -> None:
    """Register the id keys of newly inserted events (in ``table``) and their co-occurrence."""
    # One row per (primary key, key) with its first and last time: every step below reads
    # these (a few per profile) instead of one row per event and id.
    store.execute(q.cached(keys_table, table))
    params = [now, now]
    # 1. primary keys never seen before get a fresh profile of their own
    store.execute(
        """
        INSERT INTO identities
        SELECT k.id_key, any_value(k.id_type), any_value(k.id_value),
               'p_' || substr(md5(k.id_key), 1, 20), min(k.ts), max(k.max_ts), 'new', NULL
        FROM _ms_keys k
        WHERE k.id_key = k.primary_key
          AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.id_key = k.id_key)
        GROUP BY k.id_key
        """
    )
    # 2. secondary keys never seen before join the profile of the event's primary key
    store.execute(
        """
        INSERT INTO identities
        SELECT k.id_key, any_value(k.id_type), any_value(k.id_value),
               arg_min(p.profile_id, k.ts), min(k.ts), max(k.max_ts), 'same_event', NULL
        FROM _ms_keys k JOIN identities p ON p.id_key = k.primary_key
        WHERE k.id_key <> k.primary_key
          AND NOT EXISTS (SELECT 1 FROM identities i WHERE i.id_key = k.id_key)
        GROUP BY k.id_key
        """
    )
    # 3. last_seen / first_seen of keys seen again
    store.execute(
        """
        UPDATE identities SET last_seen = greatest(identities.last_seen, s.max_ts),
                              first_seen = least(identities.first_seen, s.min_ts)
        FROM (SELECT id_key, min(ts) AS min_ts, max(max_ts) AS max_ts FROM _ms_keys GROUP BY id_key) s
        WHERE identities.id_key = s.id_key
          AND (s.max_ts > identities.last_seen OR s.min_ts < identities.first_seen
               OR identities.last_seen IS NULL OR identities.first_seen IS NULL)
        """
    )
    # 4. co-occurrence edges (ordered pair, once) for the resolver
    store.execute(
        """
        INSERT INTO identity_edges
        SELECT least(primary_key, id_key), greatest(primary_key, id_key), 'event', min(ts)
        FROM _ms_keys k
        WHERE k.id_key <> k.primary_key
          AND NOT EXISTS (SELECT 1 FROM identity_edges e
                          WHERE e.id_key_a = least(k.primary_key, k.id_key)
                            AND e.id_key_b = greatest(k.primary_key, k.id_key))
        GROUP BY 1, 2
        """
    )
    # 5. profiles for new profile ids
    store.execute(
        """
        INSERT INTO profiles
        SELECT DISTINCT i.profile_id, ?, ?, NULL FROM identities i
        WHERE NOT EXISTS (SELECT 1 FROM profiles p WHERE p.profile_id = i.profile_id)
        """,
        params,
    )
    store.execute("DROP TABLE IF EXISTS _ms_keys")
