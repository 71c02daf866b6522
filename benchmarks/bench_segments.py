"""Benchmark: 20 segments in batch over N events / P profiles, and real-time latency.

    python benchmarks/bench_segments.py --events 1000000 --profiles 100000
    python benchmarks/bench_segments.py --events 10000000 --profiles 1000000

Synthetic events are generated with numpy, written to Parquet, loaded into the events
table (plus identities, profiles and a synthetic traits table); then 20 segments covering
every condition family are computed with ``compute_segments``. The real-time part replays
events at a paced 2,000 events/s through ``RealtimeEvaluator`` and reports p50/p99 latency.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from microseg.config.models import ProjectSettings, Taxonomy
from microseg.segments import RealtimeEvaluator, compute_segments, parse_segment
from microseg.store import Store

AS_OF = datetime(2024, 6, 30)
TYPES = np.array(
    [
        "product_view",
        "add_to_cart",
        "checkout_started",
        "purchase",
        "video_played",
        "store_visit",
        "email_click",
        "page_view",
    ]
)
TYPE_P = np.array([0.45, 0.12, 0.04, 0.05, 0.06, 0.03, 0.05, 0.20])
CATS = np.array(["shoes", "tech", "luxury", "toys", "books"])

SEGMENTS = [
    {
        "name": "s01_frequent_mobile",
        "rule": {
            "all": [
                {"trait": "dominant_device", "eq": "mobile"},
                {"trait": "age", "between": [25, 34]},
                {"event": "purchase", "last": "30d", "gt": 2},
                {"event": "video_played", "last": "30d"},
            ]
        },
    },
    {
        "name": "s02_repeat_viewers",
        "rule": {
            "event": "product_view",
            "per_session": True,
            "same": ["product_id"],
            "last": "7d",
            "gt": 3,
        },
    },
    {
        "name": "s03_cart_abandon_24h",
        "rule": {"first": "add_to_cart", "not_then": "purchase", "within": "24h", "last": "7d"},
    },
    {
        "name": "s04_cart_abandon_10m",
        "rule": {
            "first": "add_to_cart",
            "not_then": ["checkout_started", "purchase"],
            "within": "10m",
            "last": "3d",
        },
    },
    {
        "name": "s05_high_margin_browsers",
        "rule": {
            "all": [
                {
                    "event": "product_view",
                    "where": {"price": {"gte": 1000}},
                    "last": "30d",
                    "gte": 3,
                },
                {"event": "purchase", "last": "30d", "lt": 1},
            ]
        },
    },
    {
        "name": "s06_near_store",
        "stores": {"downtown": {"lat": 40.7128, "lon": -74.006}},
        "rule": {
            "all": [
                {"geo": {"store": "downtown", "radius": "5mi"}},
                {"event": "store_visit", "last": "7d"},
            ]
        },
    },
    {"name": "s07_postal", "rule": {"postal_code": ["10011", "1000*"]}},
    {"name": "s08_top_spenders", "rule": {"trait": "monetary", "gte": {"quantile": 0.9}}},
    {"name": "s09_above_median", "rule": {"trait": "monetary", "gt": {"quantile": 0.5}}},
    {"name": "s10_churn_risk", "rule": {"trait": "engagement_score", "lt": 0.2}},
    {"name": "s11_consent", "rule": {"consent": "email_marketing"}},
    {"name": "s12_holdout", "rule": {"bucket": {"salt": "bench", "range": [0, 10]}}},
    {"name": "s13_recent_buyers", "rule": {"recency": "purchase", "newer_than": "7d"}},
    {"name": "s14_lapsed", "rule": {"recency": "purchase", "older_than": "30d", "or_never": True}},
    {
        "name": "s15_big_spend",
        "rule": {
            "event": "purchase",
            "aggregate": "sum",
            "of": "revenue",
            "last": "30d",
            "gte": 200,
        },
    },
    {
        "name": "s16_cart_then_buy",
        "rule": {"first": "add_to_cart", "then": "purchase", "within": "2h", "last": "14d"},
    },
    {"name": "s17_email_engaged", "rule": {"event": "email_click", "last": "14d", "gte": 2}},
    {
        "name": "s18_multi_category",
        "rule": {
            "event": "product_view",
            "aggregate": "count_distinct",
            "of": "category",
            "last": "7d",
            "gte": 3,
        },
    },
    {
        "name": "s19_tech_fans",
        "rule": {
            "any": [
                {"trait": "interest_tags", "contains": "tech"},
                {"event": "product_view", "where": {"category": "tech"}, "last": "3d", "gte": 2},
            ]
        },
    },
    {
        "name": "s20_vip_audience",
        "rule": {
            "all": [
                {"segment": "s09_above_median"},
                {"segment": "s11_consent"},
                {"not": {"segment": "s12_holdout"}},
            ]
        },
    },
]

TAXONOMY = {
    "events": {
        "product_view": {
            "properties": {"product_id": "string", "category": "string", "price": "number"}
        },
        "add_to_cart": {"properties": {"product_id": "string", "price": "number"}},
        "checkout_started": {"properties": {}},
        "purchase": {"properties": {"revenue": "number", "category": "string"}},
        "video_played": {"properties": {}},
        "store_visit": {"properties": {"store_id": "string"}},
        "email_click": {"properties": {"url": "string"}},
        "page_view": {"properties": {"url": "string"}},
    }
}


def generate(n_events: int, n_profiles: int, folder: Path, seed: int = 7) -> Path:
    """Events over 60 days before AS_OF, in Parquet chunks."""
    rng = np.random.default_rng(seed)
    chunk = 2_000_000
    start = np.datetime64(AS_OF - timedelta(days=60), "us")
    for i, lo in enumerate(range(0, n_events, chunk)):
        n = min(chunk, n_events - lo)
        pid = rng.integers(0, n_profiles, n)
        secs = rng.integers(0, 60 * 86400, n)
        ts = start + secs.astype("timedelta64[s]")
        etype = TYPES[rng.choice(len(TYPES), n, p=TYPE_P)]
        table = pa.table(
            {
                "event_id": pa.array(np.char.add("e", (np.arange(n) + lo).astype(str))),
                "event_type": etype,
                "ts": pa.array(ts, pa.timestamp("us")),
                "received_at": pa.array(ts, pa.timestamp("us")),
                "user_id": np.char.add("u", pid.astype(str)),
                "id_key": np.char.add("user_id:u", pid.astype(str)),
                "session_id": np.char.add(
                    np.char.add(pid.astype(str), "-"), (secs // 7200).astype(str)
                ),
                "source": np.full(n, "bench"),
                "product_id": np.char.add("sku", rng.integers(0, 50, n).astype(str)),
                "category": CATS[rng.integers(0, len(CATS), n)],
                "price": rng.choice([10.0, 40.0, 120.0, 1500.0], n),
                "revenue": rng.gamma(2.0, 40.0, n),
                "store_id": np.full(n, "downtown"),
                "url": np.char.add("https://x/", rng.integers(0, 5, n).astype(str)),
            }
        )
        pq.write_table(table, folder / f"events_{i:03d}.parquet")
    return folder


def load(store: Store, folder: Path, n_profiles: int, seed: int = 7) -> None:
    rng = np.random.default_rng(seed + 1)
    cols = {
        "product_id": "string",
        "category": "string",
        "price": "number",
        "revenue": "number",
        "store_id": "string",
        "url": "string",
    }
    store.ensure_columns("events", cols)
    glob = str(folder / "*.parquet")
    store.con.execute("INSERT INTO events BY NAME SELECT * FROM read_parquet(?)", [glob])
    store.con.execute(
        "INSERT INTO identities SELECT 'user_id:u' || i, 'user_id', 'u' || i, 'p' || i, NULL, NULL,"
        " 'bench', NULL FROM range(?) t(i)",
        [n_profiles],
    )
    store.con.execute(
        "INSERT INTO profiles SELECT 'p' || i, ?, ?, NULL FROM range(?) t(i)",
        [AS_OF, AS_OF, n_profiles],
    )
    traits = pa.table(
        {
            "profile_id": np.char.add("p", np.arange(n_profiles).astype(str)),
            "age": rng.integers(18, 80, n_profiles),
            "dominant_device": np.array(["mobile", "desktop", "tablet"])[
                rng.integers(0, 3, n_profiles)
            ],
            "monetary": rng.gamma(2.0, 100.0, n_profiles),
            "engagement_score": rng.random(n_profiles),
            "latitude": 40.7 + rng.normal(0, 0.3, n_profiles),
            "longitude": -74.0 + rng.normal(0, 0.3, n_profiles),
            "postal_code": rng.integers(10000, 10100, n_profiles).astype(str),
            "interest_tags": pa.array(
                [["tech"] if x < 0.2 else ["books"] for x in rng.random(n_profiles)]
            ),
        }
    )
    store.con.register("_traits", traits)
    store.con.execute("CREATE TABLE traits AS SELECT * FROM _traits")
    store.con.unregister("_traits")
    store.con.execute(
        "INSERT INTO consents SELECT 'p' || i, 'email_marketing', i % 3 <> 0, 'bench', ?, NULL"
        " FROM range(?) t(i)",
        [AS_OF - timedelta(days=90), n_profiles],
    )


def realtime(store: Store, settings: ProjectSettings, segs: list, n: int, rate: float) -> dict:
    """Replay ``n`` recent events paced at ``rate`` events/s; per-event latency percentiles."""
    rows = store.rows(
        "SELECT i.profile_id, e.event_type, e.ts, e.session_id, e.product_id, e.category, e.price,"
        " e.revenue, e.store_id, e.url FROM events e JOIN identities i USING (id_key)"
        " WHERE i.profile_id IN (SELECT profile_id FROM profiles ORDER BY profile_id LIMIT 20000)"
        " ORDER BY e.ts LIMIT ?",
        [n],
    )
    names = [
        "profile_id",
        "event_type",
        "ts",
        "session_id",
        "product_id",
        "category",
        "price",
        "revenue",
        "store_id",
        "url",
    ]
    from microseg.segments.snapshot import population_snapshot

    rt = RealtimeEvaluator(segs, snapshot=population_snapshot(store, segs, AS_OF))
    lat = []
    t_start = time.perf_counter()
    for k, row in enumerate(rows):
        due = t_start + k / rate
        while time.perf_counter() < due:
            pass
        t = time.perf_counter()
        rt.on_event(dict(zip(names, row, strict=True)))
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t_start
    arr = np.array(lat) * 1000
    return {
        "events": len(rows),
        "achieved_rate": len(rows) / elapsed,
        "p50_ms": float(np.percentile(arr, 50)),
        "p99_ms": float(np.percentile(arr, 99)),
        "max_ms": float(arr.max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--realtime-events", type=int, default=20_000)
    ap.add_argument("--data", type=Path, default=None, help="reuse/keep Parquet files here")
    args = ap.parse_args()
    settings = ProjectSettings(taxonomy=Taxonomy.model_validate(TAXONOMY))
    segs = [parse_segment(s) for s in SEGMENTS]
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not list(folder.glob("*.parquet")):
            t = time.perf_counter()
            generate(args.events, args.profiles, folder)
            print(f"generate {args.events:,} events -> parquet: {time.perf_counter() - t:.1f} s")
        store = Store(Path(tmp) / "bench.duckdb", threads=args.threads)
        t = time.perf_counter()
        load(store, folder, args.profiles)
        print(f"load: {time.perf_counter() - t:.1f} s")
        report = compute_segments(store, settings, segs, AS_OF)
        print(
            f"batch: {len(segs)} segments over {args.events:,} events / {args.profiles:,} profiles"
            f" in {report.seconds:.2f} s ({args.threads} threads)"
        )
        for r in report.runs:
            print(f"  {r.name:28s} {r.size:>9,} members  {r.seconds:6.3f} s")
        rep2 = compute_segments(store, settings, segs, AS_OF + timedelta(hours=6))
        print(f"batch recompute (+6 h, with history diff): {rep2.seconds:.2f} s")
        rt = realtime(store, settings, segs, args.realtime_events, 2000.0)
        print(
            f"realtime: {rt['events']:,} events at {rt['achieved_rate']:,.0f}/s:"
            f" p50 {rt['p50_ms']:.3f} ms, p99 {rt['p99_ms']:.3f} ms, max {rt['max_ms']:.1f} ms"
        )
        store.close()


if __name__ == "__main__":
    main()
