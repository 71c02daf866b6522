"""Benchmark segment KPIs, guard evaluation and the HTML report on synthetic data.

    python benchmarks/bench_kpis.py [--users 50000] [--events 1000000] [--segments 8]

Builds an in-memory store with ``--events`` events over 26 weeks (sessions, purchases with
revenue, content views/clicks, email opens/clicks), an email ``sends`` ledger, and
``--segments`` segments with a batch computation plus real-time entries/exits in
``membership_history``. Then times ``segment_kpis`` (weekly and daily), one guard check
and ``build_report``. Figures depend on the machine (2 shared cores here).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

from microseg.measure.guards import CampaignSpec, GuardRule, evaluate_guards
from microseg.measure.kpis import segment_kpis
from microseg.report import build_report
from microseg.workspace import Workspace

START = datetime(2024, 1, 1)


def populate(ws: Workspace, users: int, events: int, segments: int) -> None:
    """Fill the store set-based in DuckDB (fixed SQL, numbers as bound parameters)."""
    s = ws.store
    s.ensure_columns("events", {"revenue": "number"})
    s.execute(
        "INSERT INTO identities (id_key, id_type, id_value, profile_id)"
        " SELECT 'user_id:u' || i, 'user_id', 'u' || i, 'p' || i FROM range(?) t(i)",
        [users],
    )
    s.execute(
        "INSERT INTO profiles SELECT 'p' || i, now(), now(), NULL FROM range(?) t(i)", [users]
    )
    # ~4 events per session; session = (user, event_no // 4)
    s.execute(
        """
        INSERT INTO events (event_id, event_type, ts, received_at, id_key, session_id, revenue)
        SELECT 'e' || i,
               CASE WHEN h % 100 < 3 THEN 'purchase' WHEN h % 100 < 20 THEN 'content_view'
                    WHEN h % 100 < 25 THEN 'content_click' WHEN h % 100 < 27 THEN 'email_open'
                    WHEN h % 100 < 28 THEN 'email_click' ELSE 'page_view' END,
               ts, ts, 'user_id:u' || u, 's' || u || '-' || (i // ? // 4),
               CASE WHEN h % 100 < 3 THEN (h % 200) + 5 END
        FROM (
            SELECT i, i % ? AS u, hash(i) AS h,
                   TIMESTAMP '2024-01-01' + to_seconds((i * 15731) % (26 * 7 * 86400)) AS ts
            FROM range(?) t(i)
        )
        """,
        [users, users, events],
    )
    s.execute(
        "INSERT INTO sends (send_key, profile_id, channel, status, created_at, updated_at,"
        " sent_at) SELECT 's' || i, 'p' || (i % ?), 'email', 'sent', ts, ts, ts FROM"
        " (SELECT i, TIMESTAMP '2024-01-01' + to_seconds((i * 7919) % (26 * 7 * 86400)) AS ts"
        "  FROM range(?) t(i))",
        [users, users * 4],
    )
    for k in range(segments):
        name = f"seg_{k}"
        s.execute(
            "INSERT INTO segments (name, definition, checksum, updated_at)"
            " VALUES (?, '{}', 'x', now())",
            [name],
        )
        s.execute(
            "INSERT INTO membership_history SELECT ?, 'p' || i, 'entered',"
            " TIMESTAMP '2024-02-01', 'bench', 'batch', now() FROM range(?) t(i)"
            " WHERE hash(i + ?) % 5 = 0",
            [name, users, k],
        )
        s.execute(
            "INSERT INTO membership_history SELECT ?, 'p' || i, 'exited',"
            " TIMESTAMP '2024-04-01' + to_seconds(i % 86400), 'bench', 'realtime', now()"
            " FROM range(?) t(i) WHERE hash(i + ?) % 5 = 0 AND i % 3 = 0",
            [name, users, k],
        )
        s.execute(
            "INSERT INTO memberships SELECT segment, profile_id, changed_at FROM"
            " membership_history WHERE segment = ? AND change = 'entered' AND profile_id NOT IN"
            " (SELECT profile_id FROM membership_history WHERE segment = ? AND change = 'exited')",
            [name, name],
        )


def timed(label: str, fn: object) -> object:
    t = time.perf_counter()
    out = fn()  # type: ignore[operator]
    print(f"{label:<44} {time.perf_counter() - t:8.2f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--segments", type=int, default=8)
    args = ap.parse_args()
    as_of = datetime(2024, 7, 1)
    with Workspace.ephemeral() as ws:
        timed(
            f"populate {args.events:,} events, {args.users:,} users",
            lambda: populate(ws, args.users, args.events, args.segments),
        )
        weekly = timed(
            f"segment_kpis weekly, {args.segments} segments + (all)",
            lambda: segment_kpis(ws.store, freq="W", as_of=as_of),
        )
        print(f"  -> {len(weekly):,} rows")  # type: ignore[arg-type]
        daily = timed("segment_kpis daily", lambda: segment_kpis(ws.store, freq="D", as_of=as_of))
        print(f"  -> {len(daily):,} rows")  # type: ignore[arg-type]
        one = timed(
            "segment_kpis weekly, one segment",
            lambda: segment_kpis(ws.store, segments=["seg_0"], freq="W", as_of=as_of),
        )
        print(f"  -> {len(one):,} rows")  # type: ignore[arg-type]
        spec = CampaignSpec(
            name="bench",
            guards=[
                GuardRule(segment="seg_0", metric="conversion_rate", drop=0.3),
                GuardRule(segment="seg_1", metric="email_open_rate", below=0.01),
            ],
        )
        timed("evaluate_guards (2 rules)", lambda: evaluate_guards(ws.store, [spec], as_of=as_of))
        out = Path(tempfile.mkdtemp(prefix="microseg-report-"))
        path = timed("build_report", lambda: build_report(ws, out, as_of=as_of))
        print(f"  -> {path} ({Path(str(path)).stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
