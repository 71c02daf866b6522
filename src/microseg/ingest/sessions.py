"""Sessionisation: a new session starts after a gap longer than the timeout, per id key.

Sessions the source supplied (e.g. a web SDK's session id) are kept as they are; only
events without one get a computed id ``ms-<hash of key and session start>``. New events are
sessionised together with the stored events just before them, so a batch continues the
session a previous batch left open; a late event that bridges two stored sessions makes
their ids be recomputed.

The import works on a narrow table of its new events (``_row``, event id, time, id key,
session id): :func:`compute_sessions` fills ``_ms_sess``, :func:`final_sessions` gives the
session start of every new row to join into the events INSERT by ``_row`` (an integer
join; the INSERT names the session), and
:func:`update_stored_sessions` fixes the stored events whose computed session changed.
"""

from __future__ import annotations

from sqlglot import exp

from microseg.store import Store
from microseg.store import sql as q

COMPUTED_PREFIX = "ms-"
SESS = "_ms_sess"


def compute_sessions(store: Store, table: str, timeout_minutes: float) -> bool:
    """Compute the session ids of the new events in ``table`` that have none (and of the
    stored computed sessions they touch) into ``_ms_sess``.

    Returns False, computing nothing, when every new event brought its own session id
    (then nothing computed can change)."""
    if table != "_ms_new":  # the SQL below names the temp table directly
        raise ValueError("compute_sessions works on the import's _ms_new table")
    seconds = float(timeout_minutes) * 60.0
    if store.scalar("SELECT 1 FROM _ms_new WHERE session_id IS NULL LIMIT 1") is None:
        return False
    # Context: the stored computed sessions of the affected keys that have events from
    # (first new ts - timeout) on, taken whole so that a session keeps its start (and id).
    # Two window passes over (id_key, ts): gap flags, then the running start of the session
    # (= its min ts, since rows are in time order) which names it. Events at the same time
    # need no tie-break: the gap between them is 0, so only the first of them (whichever it
    # is) can start a session, with their common time, and the RANGE frame shows that start
    # to all of them. The session's name (an md5) is computed later, in parallel scans.
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_sess AS
        WITH bounds AS (
            SELECT id_key, min(ts) - to_seconds(?) AS t0 FROM _ms_new GROUP BY id_key
        ),
        touched AS (  -- whole computed sessions that reach into the new events' range
            SELECT DISTINCT e.session_id FROM events e
            JOIN bounds b ON e.id_key = b.id_key AND e.ts >= b.t0
            WHERE starts_with(e.session_id, 'ms-')
        ),
        timeline AS (
            SELECT n._row, n.event_id, n.id_key, n.ts, n.session_id, TRUE AS is_new
            FROM _ms_new n
            WHERE n.session_id IS NULL
            UNION ALL
            SELECT NULL, e.event_id, e.id_key, e.ts, e.session_id, FALSE FROM events e
            WHERE e.session_id IN (SELECT session_id FROM touched)
        ),
        gaps AS (
            SELECT *, CASE WHEN lag(ts) OVER w IS NULL
                            OR epoch(ts) - epoch(lag(ts) OVER w) > ? THEN ts END AS start_ts
            FROM timeline
            WINDOW w AS (PARTITION BY id_key ORDER BY ts)
        ),
        started AS (
            SELECT *, max(start_ts) OVER (PARTITION BY id_key ORDER BY ts
                                          RANGE UNBOUNDED PRECEDING) AS sess_start
            FROM gaps
        )
        SELECT is_new, _row, sess_start,
               CASE WHEN NOT is_new THEN id_key END AS id_key,  -- new rows: named by the INSERT
               CASE WHEN NOT is_new THEN event_id END AS event_id,
               CASE WHEN NOT is_new THEN session_id END AS old_session
        FROM started
        """,
        [seconds, seconds],
    )
    return True


def final_sessions(table: str, computed: bool) -> exp.Query:
    """``(_row, _start)`` of every row of the new-events ``table``: the start of its computed
    session, NULL when it brought its own session id.

    The events INSERT joins this by ``_row`` and names the session (:func:`session_name`)
    from its own row's id key: the join's hash table holds two fixed-width columns, not ten
    million session-name strings."""
    no_start = exp.cast(exp.Null(), "TIMESTAMP")
    given = exp.select(q.col("_row"), exp.alias_(no_start, "_start", quoted=True)).from_(
        q.table(table)
    )
    if not computed:
        return given
    given = given.where(exp.Not(this=exp.Is(this=q.col("session_id"), expression=exp.Null())))
    made = (
        exp.select(q.col("_row"), exp.alias_(q.col("sess_start"), "_start", quoted=True))
        .from_(q.table(SESS))
        .where(q.col("is_new"))
    )
    return exp.union(made, given, distinct=False)


def session_name(id_key: exp.Expr | None = None, start: exp.Expr | None = None) -> exp.Expr:
    """``'ms-' || first 16 hex of md5(id_key || '|' || session start)`` (by default of a
    ``_ms_sess`` row)."""
    id_key = q.col("id_key") if id_key is None else id_key
    start = q.col("sess_start") if start is None else start
    text = exp.DPipe(
        this=exp.DPipe(this=id_key, expression=q.lit("|")),
        expression=exp.cast(start, "VARCHAR"),
    )
    digest = exp.Substring(this=exp.MD5(this=text), start=q.lit(1), length=q.lit(16))
    return exp.DPipe(this=q.lit(COMPUTED_PREFIX), expression=digest)


def update_stored_sessions(store: Store) -> None:
    """Give stored events the recomputed id of a session the new events changed."""
    store.execute(
        "UPDATE events SET session_id = s.new_session FROM ("
        + q.cached(_changed_sessions)
        + """) s
        WHERE events.event_id = s.event_id AND events.id_key = s.id_key
          AND s.old_session IS DISTINCT FROM s.new_session"""
    )


def _changed_sessions() -> exp.Expr:
    """The stored events of ``_ms_sess`` with their old and recomputed session ids."""
    return (
        exp.select(
            q.col("event_id"),
            q.col("id_key"),
            exp.alias_(session_name(), "new_session", quoted=True),
            q.col("old_session"),
        )
        .from_(q.table(SESS))
        .where(exp.Not(this=q.col("is_new")))
    )


def drop(store: Store) -> None:
    store.execute("DROP TABLE IF EXISTS _ms_sess")
