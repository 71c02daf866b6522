"""Sessionisation: a new session starts after a gap longer than the timeout, per id key.

Sessions the source supplied (e.g. a web SDK's session id) are kept as they are; only
events without one get a computed id ``ms-<hash of key and session start>``. New events are
sessionised together with the stored events just before them, so a batch continues the
session a previous batch left open; a late event that bridges two stored sessions makes
their ids be recomputed.
"""

from __future__ import annotations

from microseg.store import Store

COMPUTED_PREFIX = "ms-"


def assign_sessions(
    store: Store, table: str, timeout_minutes: float, *, insert: bool = False
) -> None:
    """Give the new events in ``table`` (the import's temp table, same columns as events)
    their session ids and fix stored computed sessions that the new events change.

    With ``insert=False`` the temp table is rebuilt with the ids filled in; with
    ``insert=True`` the new events are inserted into ``events`` with their ids instead (one
    pass instead of two — what the import does)."""
    if table != "_ms_new":  # the SQL below names the temp table directly
        raise ValueError("assign_sessions works on the import's _ms_new table")
    seconds = float(timeout_minutes) * 60.0
    if store.scalar("SELECT 1 FROM _ms_new WHERE session_id IS NULL LIMIT 1") is None:
        # every new event brought its own session id; nothing computed can change
        if insert:
            store.execute("INSERT INTO events BY NAME SELECT * FROM _ms_new")
        return
    # Context: the stored computed sessions of the affected keys that have events from
    # (first new ts - timeout) on, taken whole so that a session keeps its start (and id).
    # Two window passes over (id_key, ts, event_id): gap flags, then the running start of the
    # session (= its min ts, since rows are in time order) which names it.
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
            SELECT n.event_id, n.id_key, n.ts, n.session_id, TRUE AS is_new FROM _ms_new n
            WHERE n.session_id IS NULL
            UNION ALL
            SELECT e.event_id, e.id_key, e.ts, e.session_id, FALSE FROM events e
            WHERE e.session_id IN (SELECT session_id FROM touched)
        ),
        gaps AS (
            SELECT *, CASE WHEN lag(ts) OVER w IS NULL
                            OR epoch(ts) - epoch(lag(ts) OVER w) > ? THEN ts END AS start_ts
            FROM timeline
            WINDOW w AS (PARTITION BY id_key ORDER BY ts, event_id)
        ),
        started AS (
            SELECT *, max(start_ts) OVER (PARTITION BY id_key ORDER BY ts, event_id
                                          ROWS UNBOUNDED PRECEDING) AS sess_start
            FROM gaps
        )
        SELECT event_id, id_key, is_new, session_id AS old_session,
               'ms-' || substr(md5(id_key || '|' || CAST(sess_start AS VARCHAR)), 1, 16) AS new_session
        FROM started
        """,
        [seconds, seconds],
    )
    # Rebuilding the temp table (or inserting) with a join is much faster than an UPDATE.
    target = "INSERT INTO events BY NAME" if insert else "CREATE OR REPLACE TEMP TABLE _ms_new AS"
    store.execute(
        target
        + """
        SELECT n.* REPLACE (coalesce(n.session_id, s.new_session) AS session_id)
        FROM _ms_new n LEFT JOIN (SELECT event_id, new_session FROM _ms_sess WHERE is_new) s
          ON n.session_id IS NULL AND s.event_id = n.event_id
        """
    )
    store.execute(
        """
        UPDATE events SET session_id = s.new_session FROM _ms_sess s
        WHERE NOT s.is_new AND events.event_id = s.event_id AND events.id_key = s.id_key
          AND s.old_session IS DISTINCT FROM s.new_session
        """
    )
    store.execute("DROP TABLE IF EXISTS _ms_sess")
