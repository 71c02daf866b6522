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


def assign_sessions(store: Store, table: str, timeout_minutes: float) -> None:
    """Fill ``session_id`` in the new-events table ``table`` (a temp table, same columns as
    events) and fix stored computed sessions that the new events change."""
    if table != "_ms_new":  # the SQL below names the temp table directly
        raise ValueError("assign_sessions works on the import's _ms_new table")
    seconds = float(timeout_minutes) * 60.0
    # Context: stored events of the affected keys from (first new ts - timeout) on.
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_sess AS
        WITH bounds AS (
            SELECT id_key, min(ts) - to_seconds(?) AS t0 FROM _ms_new GROUP BY id_key
        ),
        timeline AS (
            SELECT n.event_id, n.id_key, n.ts, n.session_id, TRUE AS is_new FROM _ms_new n
            UNION ALL
            SELECT e.event_id, e.id_key, e.ts, e.session_id, FALSE FROM events e
            JOIN bounds b ON e.id_key = b.id_key AND e.ts >= b.t0
        ),
        gaps AS (
            SELECT *, CASE WHEN lag(ts) OVER w IS NULL
                            OR epoch(ts) - epoch(lag(ts) OVER w) > ? THEN 1 ELSE 0 END AS starts
            FROM timeline WHERE session_id IS NULL OR starts_with(session_id, 'ms-')
            WINDOW w AS (PARTITION BY id_key ORDER BY ts, event_id)
        ),
        numbered AS (
            SELECT *, sum(starts) OVER (PARTITION BY id_key ORDER BY ts, event_id
                                        ROWS UNBOUNDED PRECEDING) AS sess_no
            FROM gaps
        )
        SELECT event_id, id_key, is_new, session_id AS old_session,
               'ms-' || substr(md5(id_key || '|' || CAST(min(ts) OVER (PARTITION BY id_key, sess_no)
                                                        AS VARCHAR)), 1, 16) AS new_session
        FROM numbered
        """,
        [seconds, seconds],
    )
    store.execute(
        """
        UPDATE _ms_new SET session_id = s.new_session FROM _ms_sess s
        WHERE s.is_new AND _ms_new.event_id = s.event_id AND _ms_new.session_id IS NULL
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
