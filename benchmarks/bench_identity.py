"""Identity benchmarks: resolve over ~1.5M identity edges, and a 100k-row CRM import with PII.

Run: python benchmarks/bench_identity.py [--users 110000] [--crm-rows 100000]

Graph: every id key starts in a profile of its own (worst case); each user has 1 user_id,
4 anonymous ids and 2 devices linked by 14 edges; 10% of users share a device with the next
user (two known users -> refused, their components replay through the guard).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from microseg.config.models import ProjectSettings
from microseg.ingest.identity import resolve
from microseg.ingest.profiles import import_profiles
from microseg.privacy.crypto import KeyRing
from microseg.store import Store

GRAPH_SQL = """
CREATE TEMP TABLE k AS
SELECT 'user_id:' || u AS id_key, 'user_id' AS id_type, u::VARCHAR AS id_value, u, 0 AS j FROM range(?) t(u)
UNION ALL SELECT 'anonymous_id:' || u || '-' || j, 'anonymous_id', u || '-' || j, u, j
  FROM range(?) t(u), range(4) s(j)
UNION ALL SELECT 'device_id:' || u || '-' || j, 'device_id', u || '-' || j, u, j
  FROM range(?) t(u), range(2) s(j);
INSERT INTO identities SELECT id_key, id_type, id_value, 'p_' || substr(md5(id_key), 1, 20),
  TIMESTAMP '2026-01-01' + to_seconds(u), TIMESTAMP '2026-01-01' + to_seconds(u), 'new', NULL FROM k;
INSERT INTO profiles SELECT DISTINCT profile_id, TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-01', NULL
  FROM identities;
INSERT INTO identity_edges SELECT least(ka, kb), greatest(ka, kb), 'event', min(fs) FROM (
  SELECT a.id_key AS ka, b.id_key AS kb, TIMESTAMP '2026-01-01' + to_seconds(a.u) AS fs
  FROM k a JOIN k b ON a.u = b.u AND a.id_type < b.id_type
  UNION ALL
  SELECT a.id_key, b.id_key, TIMESTAMP '2026-01-01' + to_seconds(a.u) + INTERVAL 1 HOUR
  FROM k a JOIN k b ON b.u = a.u + 1
  WHERE a.id_type = 'device_id' AND b.id_type = 'user_id' AND a.j = 0 AND a.u % 10 = 0
) GROUP BY 1, 2;
"""


def bench_resolve(users: int) -> None:
    store = Store(None)
    t = time.perf_counter()
    for stmt in GRAPH_SQL.strip().split(";"):
        if stmt.strip():
            store.execute(stmt, [users] * stmt.count("?"))
    edges = store.scalar("SELECT count(*) FROM identity_edges")
    keys = store.scalar("SELECT count(*) FROM identities")
    print(
        f"graph: {keys:,} keys / profiles, {edges:,} edges (built in {time.perf_counter() - t:.1f}s)"
    )
    r = resolve(store, ProjectSettings(), probabilistic=False)
    print(
        f"resolve: {r.seconds:.2f}s · {r.edges_considered:,} cross-profile pairs · merges"
        f" {r.deterministic_merges:,} · refused {r.refused} · profiles {r.profiles_before:,}"
        f" -> {r.profiles_after:,}"
    )
    t = time.perf_counter()
    again = resolve(store, ProjectSettings(), probabilistic=False)
    print(f"re-run (nothing to merge): {time.perf_counter() - t:.2f}s, merges {again.merges}")
    store.close()


def bench_crm(rows: int) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(rows)],
            "email": [f"person{i}@example.com" for i in range(rows)],
            "phone": [
                f"+1 415 {rng.integers(200, 999)} {rng.integers(1000, 9999)}" for _ in range(rows)
            ],
            "first_name": rng.choice(["Ana", "Bob", "Carla", "Dmitri", "Eve"], rows),
            "last_name": rng.choice(["Smith", "Lopez", "Ng", "Okafor", "Muller"], rows),
            "postal_code": rng.integers(10000, 99999, rows).astype(str),
            "age": rng.integers(18, 90, rows),
            "income_tier": rng.choice(["low", "mid", "high"], rows),
            "occupation": rng.choice(["nurse", "engineer", "teacher", "driver"], rows),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crm.csv"
        df.to_csv(path, index=False)
        store = Store(Path(tmp) / "bench.duckdb")
        ring = KeyRing.generate()  # one ring: per-profile keys are wrapped by its master key
        r = import_profiles(store, ProjectSettings(), ring, path, id_column="customer_id")
        print(
            f"crm import: {rows:,} rows in {r.seconds:.2f}s ({r.rows_per_second:,.0f} rows/s) · attributes"
            f" {r.attributes_written:,} · PII values {r.pii_values:,} · new email ids {r.identities_linked:,}"
        )
        t = time.perf_counter()
        r2 = import_profiles(store, ProjectSettings(), ring, path, id_column="customer_id")
        print(
            f"crm re-import (all profiles exist): {time.perf_counter() - t:.2f}s, created {r2.profiles_created}"
        )
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=110_000)
    parser.add_argument("--crm-rows", type=int, default=100_000)
    args = parser.parse_args()
    bench_resolve(args.users)
    bench_crm(args.crm_rows)


if __name__ == "__main__":
    main()
