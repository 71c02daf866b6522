"""Benchmark: a journey trigger sweep over 1 M profiles (target: <= 10 s).

    python benchmarks/bench_trigger_sweep.py                      # 1,000,000 profiles
    python benchmarks/bench_trigger_sweep.py --profiles 100000 --events 500000

Tables are built directly in DuckDB (profiles, identities, a renewal_date attribute for every
profile, a traits table with an engagement score, and add_to_cart / purchase events over the
last 10 days). Three journeys are swept together with ``JourneyEngine.sweep``:

* ``renewal`` — date-relative: 7, 3 and 1 days before ``renewal_date`` at 09:00;
* ``rescue`` — behavioural condition in the segment language: cart added, no purchase within
  24 h (last 7 days) AND engagement below 3 (edge-triggered);
* ``carts`` — event trigger: any add_to_cart since the last sweep.

Reported: the first sweep (one day of date offsets, every current condition match enrolled)
and a steady-state sweep one hour later, each with the number of profiles enrolled.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta

from microseg.activate.channels import FileOutboxChannel
from microseg.activate.journey_model import Journey
from microseg.activate.journeys import JourneyEngine
from microseg.store import Store

NOW = datetime(2026, 3, 2, 9, 30)
MAIL = [{"id": "m", "send": {"channel": "file", "block": "b", "purpose": "p"}}]
JOURNEYS = [
    {"name": "renewal", "trigger": {"date": "renewal_date", "before": [7, 3, 1]}, "steps": MAIL},
    {
        "name": "rescue",
        "trigger": {
            "condition": {
                "all": [
                    {"first": "add_to_cart", "not_then": "purchase", "within": "24h", "last": "7d"},
                    {"trait": "engagement", "lt": 3.0},
                ]
            }
        },
        "steps": MAIL,
    },
    {"name": "carts", "trigger": {"event": "add_to_cart"}, "steps": MAIL},
]


def build(store: Store, profiles: int, events: int) -> None:
    """Synthetic profiles, identities, attributes, traits and events (set-based SQL)."""
    con = store.con
    con.execute("SELECT setseed(0.42)")
    con.execute(
        "INSERT INTO profiles SELECT 'p' || i, TIMESTAMP '2025-01-01', TIMESTAMP '2025-01-01',"
        " NULL FROM range(?) t(i)",
        [profiles],
    )
    con.execute(
        "INSERT INTO identities SELECT 'user_id:u' || i, 'user_id', 'u' || i, 'p' || i,"
        " NULL, NULL, 'bench', NULL FROM range(?) t(i)",
        [profiles],
    )
    con.execute(
        "INSERT INTO profile_attributes SELECT 'p' || i, 'renewal_date',"
        " strftime(DATE '2026-03-02' + CAST(i % 365 AS INTEGER), '%Y-%m-%d'), NULL, 'bench',"
        " TIMESTAMP '2025-01-01' FROM range(?) t(i)",
        [profiles],
    )
    con.execute("CREATE TABLE traits (profile_id VARCHAR, engagement DOUBLE)")
    con.execute("INSERT INTO traits SELECT 'p' || i, random() * 10 FROM range(?) t(i)", [profiles])
    con.execute(
        "INSERT INTO events (event_id, event_type, ts, received_at, user_id, id_key)"
        " SELECT 'e' || i, CASE WHEN random() < 0.7 THEN 'add_to_cart' ELSE 'purchase' END,"
        " TIMESTAMP '2026-03-02 09:00:00' - to_seconds(CAST(random() * 864000 AS BIGINT)),"
        " TIMESTAMP '2026-03-02 09:00:00', 'u' || u, 'user_id:u' || u"
        " FROM (SELECT i, CAST(floor(random() * ?) AS BIGINT) AS u FROM range(?) t(i))",
        [profiles, events],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    store = Store(None, threads=args.threads)
    t0 = time.perf_counter()
    build(store, args.profiles, args.events)
    print(
        f"built {args.profiles:,} profiles, {args.events:,} events in {time.perf_counter() - t0:.1f}s"
    )
    journeys = [Journey.model_validate(j) for j in JOURNEYS]
    engine = JourneyEngine(
        store,
        journeys,
        channels={"file": FileOutboxChannel("/dev/null")},
        clock=lambda: NOW,
    )
    for label, at in (
        ("first sweep", NOW),
        ("steady-state sweep (+1 h)", NOW + timedelta(hours=1)),
    ):
        times = {}
        for journey in journeys:
            t0 = time.perf_counter()
            enrolled = engine.sweep_journey(journey, at)
            times[journey.name] = time.perf_counter() - t0
            print(f"  {label} {journey.name}: {times[journey.name]:.2f}s, enrolled {enrolled:,}")
        target = times["renewal"] + times["rescue"]
        verdict = "OK" if target <= 10 else "SLOWER THAN THE 10 s TARGET"
        print(
            f"{label}: date-relative + behavioural {target:.2f}s [{verdict}];"
            f" with the event trigger {sum(times.values()):.2f}s"
        )
    timers = store.scalar("SELECT count(*) FROM timers WHERE fired_at IS NULL")
    print(f"pending first-step timers: {timers:,}")


if __name__ == "__main__":
    main()
