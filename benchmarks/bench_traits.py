"""Benchmark: computed traits in DuckDB (compiled SQL) vs a straightforward pandas version.

    python benchmarks/bench_traits.py --events 10000000 --profiles 1000000

Steps: generate synthetic events with numpy (deterministic seed) into Parquet; load them
into a file-backed Store (events + identities + profiles); then, each in its own child
process so peak memory is measured separately, (a) ``compute_traits`` over ~15 traits and
(b) the same TraitSet in plain pandas (microseg.traits.reference). Prints seconds, the
speed ratio and the peak RSS of each child. Loading is not timed in either path.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

AS_OF = datetime(2024, 6, 1)
EVENT_TYPES = {
    "page_view": 0.33,
    "product_view": 0.33,
    "add_to_cart": 0.1,
    "purchase": 0.06,
    "email_open": 0.1,
    "email_click": 0.05,
    "video_played": 0.03,
}
CATEGORIES = [
    "running shoes",
    "running apparel",
    "phones",
    "phone cases",
    "kitchen tools",
    "kitchen appliances",
    "books",
    "toys",
    "garden",
    "beauty",
    "outdoor",
    "laptops",
]
DEVICES = ["mobile", "desktop", "tablet"]

TAXONOMY = {
    "events": {
        "page_view": {"properties": {"url": "string", "device": "string"}},
        "product_view": {
            "properties": {
                "product_id": "string",
                "category": "string",
                "price": "number",
                "device": "string",
            }
        },
        "add_to_cart": {
            "properties": {
                "product_id": "string",
                "category": "string",
                "price": "number",
                "quantity": "number",
            }
        },
        "purchase": {
            "properties": {
                "order_id": "string",
                "product_id": "string",
                "category": "string",
                "price": "number",
                "quantity": "number",
            }
        },
        "email_open": {"properties": {"campaign_id": "string"}},
        "email_click": {"properties": {"campaign_id": "string"}},
        "video_played": {"properties": {"video_id": "string"}},
    }
}

TRAITS = """
traits:
  - {name: orders_30d, kind: distinct_count, property: order_id, events: [purchase], window: {last: 30d}}
  - {name: spend_90d, kind: sum, expression: quantity * price, events: [purchase], window: {last: 90d}}
  - {name: avg_item_value, kind: avg, expression: quantity * price, events: [purchase]}
  - {name: max_price_viewed, kind: max, property: price, events: [product_view]}
  - {name: views_7d, kind: count, events: [product_view], window: {last: 7d}}
  - {name: running_views_30d, kind: count, events: [product_view],
     where: {category: {like: 'running%'}}, window: {last: 30d}}
  - {name: email_clicks_90d, kind: count, events: [email_click], window: {last: 90d}}
  - {name: days_since_purchase, kind: recency_days, events: [purchase]}
  - {name: last_viewed_category, kind: last, property: category, events: [product_view]}
  - {name: rfm, kind: rfm, events: [purchase], monetary: quantity * price, frequency_of: order_id}
  - {name: dominant_device, kind: dominant, property: device}
  - {name: preferred_hour, kind: preferred_hour}
  - {name: top_category, kind: top, property: category,
     events: [product_view, add_to_cart, purchase], window: {last: 90d}}
  - name: engagement
    kind: engagement
    weights: {purchase: 10, add_to_cart: 5, product_view: 1, page_view: 0.5,
              email_click: 3, email_open: 1, video_played: 2}
    half_life_days: 14
    window: {last: 180d}
  - name: interests
    kind: interest_tags
    min_count: 2
    cap: 3
    window: {last: 90d}
    rules:
      - {tag: Sports > Running, events: [product_view, purchase], where: {category: {like: 'running%'}}}
      - {tag: Electronics > Phones, events: [product_view, purchase], where: {category: {like: 'phone%'}}}
      - {tag: Home > Kitchen, events: [product_view, purchase], where: {category: {like: 'kitchen%'}}}
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU of this process (all threads): stable when the machine is shared."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------- generation
def _dict_column(
    indices: np.ndarray, values: list[str], valid: np.ndarray | None = None
) -> pa.Array:
    idx = pa.array(indices.astype(np.int32), mask=None if valid is None else ~valid)
    return pa.DictionaryArray.from_arrays(idx, pa.array(values))


def generate(folder: Path, n_events: int, n_profiles: int, seed: int = 7) -> None:
    """Write events.parquet, identities.parquet and profiles.parquet (deterministic)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    keys = pc.binary_join_element_wise(
        "user_id:u", pc.cast(pa.array(np.arange(n_profiles)), pa.string()), ""
    )
    pids = pc.binary_join_element_wise(
        "p", pc.cast(pa.array(np.arange(n_profiles)), pa.string()), ""
    )
    pq.write_table(pa.table({"id_key": keys, "profile_id": pids}), folder / "identities.parquet")
    chunk = 2_000_000
    writer = None
    types = list(EVENT_TYPES)
    probs = np.array(list(EVENT_TYPES.values()))
    probs = probs / probs.sum()
    for start in range(0, n_events, chunk):
        n = min(chunk, n_events - start)
        who = np.minimum((n_profiles * rng.random(n) ** 1.3).astype(np.int64), n_profiles - 1)
        et = rng.choice(len(types), size=n, p=probs)
        age_s = (rng.random(n) ** 1.5 * 365 * 86400).astype(np.int64)
        ts = np.datetime64(AS_OF, "s") - age_s.astype("timedelta64[s]") + np.timedelta64(3600, "s")
        commerce = np.isin(
            et, [types.index(t) for t in ("product_view", "add_to_cart", "purchase")]
        )
        is_purchase = et == types.index("purchase")
        has_device = np.isin(et, [types.index("page_view"), types.index("product_view")])
        ids = np.arange(start, start + n)
        event_id = pc.binary_join_element_wise("e", pc.cast(pa.array(ids), pa.string()), "")
        order = pc.binary_join_element_wise("o", pc.cast(pa.array(ids // 3), pa.string()), "")
        batch = pa.table(
            {
                "event_id": event_id,
                "event_type": _dict_column(et, types),
                "ts": pa.array(ts.astype("datetime64[us]")),
                "id_key": pc.take(keys, pa.array(who)),
                "order_id": pc.if_else(pa.array(is_purchase), order, pa.scalar(None, pa.string())),
                "category": _dict_column(rng.integers(0, len(CATEGORIES), n), CATEGORIES, commerce),
                "device": _dict_column(rng.choice(3, n, p=[0.6, 0.3, 0.1]), DEVICES, has_device),
                "price": pa.array(np.round(rng.gamma(2.0, 20.0, n), 2), mask=~commerce),
                "quantity": pa.array(
                    rng.integers(1, 5, n).astype(np.float64),
                    mask=~(commerce & (et != types.index("product_view"))),
                ),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(folder / "events.parquet", batch.schema)
        writer.write_table(batch)
    assert writer is not None
    writer.close()


def load_store(folder: Path, db: Path) -> None:
    """Fill a Store file with the generated events, identities and one profile each."""
    from microseg.config.models import ProjectSettings
    from microseg.store import Store

    settings = ProjectSettings.model_validate({"taxonomy": TAXONOMY})
    store = Store(db)
    store.ensure_columns("events", settings.taxonomy.property_columns())
    events = str(folder / "events.parquet")
    idents = str(folder / "identities.parquet")
    store.execute(
        "INSERT INTO events BY NAME SELECT event_id, CAST(event_type AS VARCHAR) AS event_type, ts,"
        " ts AS received_at, id_key, 'bench' AS source, order_id, CAST(category AS VARCHAR) AS"
        " category, CAST(device AS VARCHAR) AS device, price, quantity FROM read_parquet(?)",
        [events],
    )
    store.execute(
        "INSERT INTO identities (id_key, id_type, id_value, profile_id) SELECT id_key, 'user_id',"
        " substr(id_key, 9), profile_id FROM read_parquet(?)",
        [idents],
    )
    store.execute(
        "INSERT INTO profiles SELECT profile_id, TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-01',"
        " NULL FROM read_parquet(?)",
        [idents],
    )
    store.execute("CHECKPOINT")
    store.close()


# --------------------------------------------------------------------------- the two runs
def _traitset() -> tuple[Any, Any]:
    from microseg.config.models import ProjectSettings
    from microseg.traits import load_traits

    settings = ProjectSettings.model_validate({"taxonomy": TAXONOMY})
    return settings, load_traits(TRAITS, settings.taxonomy)


def run_sql(db: Path, threads: int, memory_limit: str) -> dict[str, object]:
    from microseg.store import Store
    from microseg.traits import compute_traits

    settings, traitset = _traitset()
    store = Store(db, threads=threads, memory_limit=memory_limit)
    cpu0 = cpu_seconds()
    result = compute_traits(store, settings, traitset, AS_OF)
    cpu = cpu_seconds() - cpu0
    checksum = store.rows(
        "SELECT sum(views_7d), sum(rfm_frequency), round(sum(spend_90d), 2),"
        " count(*) FILTER (WHERE rfm = 'Champions'), sum(len(interests)) FROM traits"
    )[0]
    store.close()
    return {
        "seconds": result.seconds,
        "rows": result.rows,
        "columns": len(result.columns),
        "timings": result.timings,
        "peak_rss_mb": peak_rss_mb(),
        "cpu": cpu,
        "checksum": list(checksum),
    }


def run_pandas(folder: Path) -> dict[str, object]:
    import pandas as pd

    from microseg.traits.reference import pandas_traits

    _, traitset = _traitset()
    table = pq.read_table(folder / "events.parquet")
    table = table.cast(
        pa.schema(
            [
                pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
                for f in table.schema
            ]
        )
    )
    events = table.to_pandas()
    idents = pq.read_table(folder / "identities.parquet").to_pandas()
    started, cpu0 = time.perf_counter(), cpu_seconds()
    out = pandas_traits(traitset, AS_OF, events, idents, idents["profile_id"])
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    checksum = [
        int(out["views_7d"].sum()),
        int(out["rfm_frequency"].sum()),
        round(float(out["spend_90d"].sum()), 2),
        int((out["rfm"] == "Champions").sum()),
        int(out["interests"].map(len).sum()),
    ]
    del pd
    return {
        "seconds": seconds,
        "rows": len(out),
        "peak_rss_mb": peak_rss_mb(),
        "cpu": cpu,
        "checksum": checksum,
    }


def _child(args: list[str]) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", choices=["sql", "pandas"], default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-traits-"))
    if args.child == "sql":
        print(json.dumps(run_sql(work / "bench.duckdb", args.threads, args.memory_limit)))
        return
    if args.child == "pandas":
        print(json.dumps(run_pandas(work)))
        return

    t0 = time.perf_counter()
    generate(work, args.events, args.profiles)
    t1 = time.perf_counter()
    load_store(work, work / "bench.duckdb")
    t2 = time.perf_counter()
    print(
        f"events {args.events:,} · profiles {args.profiles:,} · generate {t1 - t0:.1f}s · load {t2 - t1:.1f}s"
    )
    common = [
        "--workdir",
        str(work),
        "--threads",
        str(args.threads),
        "--memory-limit",
        args.memory_limit,
    ]
    sql = _child(["--child", "sql", *common])
    print(f"load average : {os.getloadavg()[0]:.1f} (other work on the machine slows wall time)")
    print(
        f"microseg SQL : {sql['seconds']:.2f}s wall, {sql['cpu']:.1f}s CPU  peak RSS {sql['peak_rss_mb']:.0f} MB  "
        f"({sql['rows']:,} profiles x {sql['columns']} columns; {sql['timings']})"
    )
    if args.skip_pandas:
        return
    pdr = _child(["--child", "pandas", *common])
    print(
        f"pandas       : {pdr['seconds']:.2f}s wall, {pdr['cpu']:.1f}s CPU  peak RSS {pdr['peak_rss_mb']:.0f} MB"
    )
    wall = pdr["seconds"] / sql["seconds"]  # type: ignore[operator]
    cpu = pdr["cpu"] / sql["cpu"]  # type: ignore[operator]
    print(f"ratio        : {wall:.1f}x faster (wall), {cpu:.1f}x less CPU")
    same = sql["checksum"] == pdr["checksum"]
    print(
        f"checksums    : sql {sql['checksum']} pandas {pdr['checksum']} -> {'MATCH' if same else 'DIFFER'}"
    )


if __name__ == "__main__":
    main()
