"""Sessionisation: a new session starts after a gap longer than the timeout, per id key.

Sessions the source supplied (e.g. a web SDK's session id) are kept as they are; only
events without one get a computed id ``ms-<hash of key and session start>``. New events are
sessionised together with the stored events just before them, so a batch continues the
session a previous batch left open; a late event that bridges two stored sessions makes
their ids be recomputed.

The import works on a narrow table of its new events (``_row``, event id, time, id key,
session id): :func:`compute_sessions` fills ``_ms_sess``, :func:`final_sessions` gives the
session start of every new row to join into the events INSERT by ``_row`` (an integer
join; the INSERT names the session), :func:`update_stored_sessions` fixes the stored events
whose computed session changed, and :func:`update_heads` keeps ``session_heads`` (each
key's latest computed session) current, so that events arriving in order, the usual case,
are sessionised without reading any stored event however long their sessions run.
"""

from __future__ import annotations

from sqlglot import exp

from microseg.store import Store
from microseg.store import sql as q

COMPUTED_PREFIX = "ms-"
SESS = "_ms_sess"


HEADS = "_ms_heads"
NEW_HEADS = "_ms_new_heads"

# The timeline of the keys whose new events need a session: the new events, the stored
# session each *appending* key continues (one pseudo-row from session_heads: its last time,
# carrying its start and name), and, for keys with *late* events (earlier than their head's
# last event), the stored computed sessions that reach into the new events' range, taken
# whole so that a session keeps its start (and id). Two window passes over (id_key, ts): gap
# flags, then the running start of the session (= its min ts, since rows are in time order)
# which names it. Events at the same time need no tie-break: the gap between them is 0, so
# only the first of them (whichever it is) can start a session, with their common time, and
# the RANGE frame shows that start to all of them; a head pseudo-row sorts first among its
# peers, so a new event at its time continues it. The session's name (an md5) is computed
# later, in parallel scans.
_TIMELINE_NEW = """
    SELECT n._row, n.event_id, n.id_key, n.ts, n.session_id, TRUE AS is_new,
           FALSE AS is_head, NULL::TIMESTAMP AS head_start
    FROM _ms_new n
    WHERE n.session_id IS NULL"""
_TIMELINE_HEADS = """
    UNION ALL
    SELECT NULL, NULL, h.id_key, h.last_ts, h.session_id, FALSE, TRUE, h.start_ts
    FROM _ms_heads h
    WHERE h.append"""
_TIMELINE_LATE = """
    UNION ALL
    SELECT NULL, e.event_id, e.id_key, e.ts, e.session_id, FALSE, FALSE, NULL FROM events e
    WHERE e.session_id IN (SELECT session_id FROM touched)"""
_LATE_CONTEXT = """
    bounds AS (
        SELECT n.id_key, min(n.ts) - to_seconds(?) AS t0
        FROM _ms_new n SEMI JOIN _ms_heads h ON n.id_key = h.id_key AND NOT h.append
        GROUP BY n.id_key
    ),
    touched AS (  -- whole computed sessions that reach into the late events' range
        SELECT DISTINCT e.session_id FROM events e
        JOIN bounds b ON e.id_key = b.id_key AND e.ts >= b.t0
        WHERE starts_with(e.session_id, 'ms-')
    ),"""
_SESSIONS = """
    gaps AS (
        SELECT *, CASE WHEN is_head THEN head_start
                       WHEN lag(ts) OVER w IS NULL
                            OR epoch(ts) - epoch(lag(ts) OVER w) > ? THEN ts END AS start_ts
        FROM timeline
        WINDOW w AS (PARTITION BY id_key ORDER BY ts, NOT is_head)
    ),
    started AS (
        SELECT *, max(start_ts) OVER (PARTITION BY id_key ORDER BY ts
                                      RANGE UNBOUNDED PRECEDING) AS sess_start
        FROM gaps
    )
    SELECT s.is_new, s.is_head, s._row, s.sess_start,
           CASE WHEN NOT s.is_new THEN s.id_key END AS id_key,  -- new rows: named by the INSERT
           CASE WHEN NOT s.is_new THEN s.event_id END AS event_id,
           CASE WHEN NOT s.is_new THEN s.session_id END AS old_session,
           CASE WHEN NOT s.is_new THEN s.ts END AS ts,
           {continues} AS continues  -- the stored name of the head session it continues
    FROM started s{join}"""


def compute_sessions(store: Store, table: str, timeout_minutes: float) -> bool:
    """Compute the session ids of the new events in ``table`` that have none (and of the
    stored computed sessions late events touch) into ``_ms_sess``.

    Returns False, computing nothing, when every new event brought its own session id
    (then nothing computed can change).

    In order events read no stored event: ``session_heads`` holds each key's latest computed
    session (its name, start and last time), which a new event at or after that last time
    can only continue or follow. Only a key with a late event has its stored sessions read.
    """
    if table != "_ms_new":  # the SQL below names the temp table directly
        raise ValueError("compute_sessions works on the import's _ms_new table")
    seconds = float(timeout_minutes) * 60.0
    if store.scalar("SELECT 1 FROM _ms_new WHERE session_id IS NULL LIMIT 1") is None:
        return False
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_heads AS
        SELECT h.id_key, h.session_id, h.start_ts, h.last_ts, b.first_ts >= h.last_ts AS append
        FROM session_heads h
        JOIN (SELECT id_key, min(ts) AS first_ts FROM _ms_new WHERE session_id IS NULL
              GROUP BY id_key) b ON h.id_key = b.id_key
        """
    )
    kinds = {bool(r[0]) for r in store.rows("SELECT DISTINCT append FROM _ms_heads")}
    appending, late = True in kinds, False in kinds
    timeline = _TIMELINE_NEW + (_TIMELINE_HEADS if appending else "")
    timeline += _TIMELINE_LATE if late else ""
    if appending:
        continues = "CASE WHEN s.sess_start = h.start_ts THEN h.session_id END"
        join = "\n    LEFT JOIN _ms_heads h ON h.id_key = s.id_key AND h.append"
    else:
        continues, join = "NULL::VARCHAR", ""
    text = (
        "CREATE OR REPLACE TEMP TABLE _ms_sess AS\nWITH"
        + (_LATE_CONTEXT if late else "")
        + "\n    timeline AS ("
        + timeline
        + "\n    ),"
        + _SESSIONS.format(continues=continues, join=join)
    )
    store.execute(text, [seconds, seconds] if late else [seconds])
    return True


def update_heads(store: Store) -> None:
    """Keep ``session_heads`` the latest computed session of every key ``_ms_sess`` holds
    (after the new events and any recomputed stored session ids are written)."""
    store.execute(q.cached(_new_heads))
    store.execute("DELETE FROM session_heads WHERE id_key IN (SELECT id_key FROM _ms_new_heads)")
    store.execute("INSERT INTO session_heads SELECT * FROM _ms_new_heads")


def _new_heads() -> exp.Expr:
    """``_ms_new_heads``: per key of ``_ms_sess``, the session of its latest event."""
    new = (
        exp.select(
            q.col("id_key", "n"),
            q.col("ts", "n"),
            q.col("sess_start", "s"),
            q.col("continues", "s"),
        )
        .from_(exp.Table(this=q.ident(SESS), alias=exp.TableAlias(this=q.ident("s"))))
        .join(
            exp.Table(this=q.ident("_ms_new"), alias=exp.TableAlias(this=q.ident("n"))),
            on=exp.EQ(this=q.col("_row", "s"), expression=q.col("_row", "n")),
            join_type="INNER",
        )
        .where(q.col("is_new", "s"))
    )
    stored = (
        exp.select(q.col("id_key"), q.col("ts"), q.col("sess_start"), q.col("continues"))
        .from_(q.table(SESS))
        .where(exp.Not(this=q.col("is_new")))
    )
    rows = exp.union(new, stored, distinct=False).subquery("t")
    name = exp.Coalesce(this=q.col("continues"), expressions=[session_name()])
    ts = q.col("ts")
    return q.create_temp(
        NEW_HEADS,
        exp.select(
            q.col("id_key"),
            exp.alias_(q.func("arg_max", name, ts), "session_id", quoted=True),
            exp.alias_(q.func("arg_max", q.col("sess_start"), ts), "start_ts", quoted=True),
            exp.alias_(exp.Max(this=ts), "last_ts", quoted=True),
        )
        .from_(rows)
        .group_by(q.col("id_key")),
    )


def final_sessions(table: str, computed: bool) -> exp.Query:
    """``(_row, _start, _name)`` of every row of the new-events ``table``: the start of its
    computed session (NULL when it brought its own session id), and the stored name of the
    session it continues (NULL unless it continues a key's latest stored session).

    The events INSERT joins this by ``_row`` and names a new session (:func:`session_name`)
    from its own row's id key: the join's hash table holds fixed-width columns and the few
    continued names, not ten million session-name strings."""
    no_start = exp.cast(exp.Null(), "TIMESTAMP")
    no_name = exp.cast(exp.Null(), "VARCHAR")
    given = exp.select(
        q.col("_row"),
        exp.alias_(no_start, "_start", quoted=True),
        exp.alias_(no_name, "_name", quoted=True),
    ).from_(q.table(table))
    if not computed:
        return given
    given = given.where(exp.Not(this=exp.Is(this=q.col("session_id"), expression=exp.Null())))
    made = (
        exp.select(
            q.col("_row"),
            exp.alias_(q.col("sess_start"), "_start", quoted=True),
            exp.alias_(q.col("continues"), "_name", quoted=True),
        )
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
        .where(exp.and_(exp.Not(this=q.col("is_new")), exp.Not(this=q.col("is_head"))))
    )


def drop(store: Store) -> None:
    for name in (SESS, HEADS, NEW_HEADS):
        store.execute(q.cached(q.drop, name))
