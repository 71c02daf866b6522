"""Synthetic generator: determinism, shape, planted personas."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from microseg.synth import EVENT_TYPES, PERSONA_NAMES, generate_events

START = datetime(2024, 1, 1)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("synth") / "events.parquet"
    generate_events(path, 200_000, 5_000, seed=7, start=START, days=60, chunk_rows=50_000)
    return path


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = generate_events(tmp_path / "a.parquet", 30_000, 1_000, seed=3, chunk_rows=7_000)
    b = generate_events(tmp_path / "b.parquet", 30_000, 1_000, seed=3, chunk_rows=7_000)
    c = generate_events(tmp_path / "c.parquet", 30_000, 1_000, seed=4, chunk_rows=7_000)
    assert digest(a.path) == digest(b.path)
    assert digest(a.truth_path) == digest(b.truth_path)
    assert digest(a.path) != digest(c.path)
    assert a.persona_counts == b.persona_counts


def test_shape_and_chunks(sample: Path) -> None:
    meta = pq.ParquetFile(sample).metadata
    assert meta.num_rows == 200_000
    assert meta.num_row_groups == 4  # one per chunk: never the whole file in memory
    con = duckdb.connect()
    n, ids, users, t0, t1 = con.execute(
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT user_id), min(timestamp), max(timestamp) FROM read_parquet(?)",
        [str(sample)],
    ).fetchone()
    assert n == ids == 200_000
    assert 4_500 < users <= 5_000
    assert t0 >= START and t1 < START + timedelta(days=60)
    types = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT event_type FROM read_parquet(?)", [str(sample)]
        ).fetchall()
    }
    assert (
        types <= set(EVENT_TYPES)
        and {"page_view", "product_view", "add_to_cart", "purchase"} <= types
    )
    # product columns only on product events, prices positive
    bad = con.execute(
        "SELECT count(*) FROM read_parquet(?) WHERE (price IS NULL) = (event_type IN ('product_view','add_to_cart','purchase')) OR price <= 0",
        [str(sample)],
    ).fetchone()[0]
    assert bad == 0


def test_planted_personas_are_recoverable(sample: Path) -> None:
    truth = sample.with_name("events.truth.parquet")
    con = duckdb.connect()
    counts = dict(
        con.execute(
            "SELECT persona, count(*) FROM read_parquet(?) GROUP BY 1", [str(truth)]
        ).fetchall()
    )
    assert set(counts) == set(PERSONA_NAMES) and sum(counts.values()) == 5_000
    stats = {
        r[0]: r[1:]
        for r in con.execute(
            """
            SELECT t.persona,
                   count(*) FILTER (WHERE e.event_type = 'purchase') / count(DISTINCT e.user_id),
                   count(*) FILTER (WHERE e.event_type = 'add_to_cart'),
                   avg(CASE WHEN e.device = 'mobile' THEN 1.0 ELSE 0.0 END),
                   avg(e.price) FILTER (WHERE e.event_type = 'purchase'),
                   max(e.timestamp),
                   count(*) / count(DISTINCT e.user_id)
            FROM read_parquet(?) e JOIN read_parquet(?) t USING (user_id)
            GROUP BY 1
            """,
            [str(sample), str(truth)],
        ).fetchall()
    }
    purchases = {k: v[0] for k, v in stats.items()}
    # nobody but buyers buys; abandoners add to cart but never purchase; window shoppers never add
    assert purchases["cart_abandoner"] == 0 and purchases["window_shopper"] == 0
    assert stats["cart_abandoner"][1] > 0 and stats["window_shopper"][1] == 0
    assert purchases["frequent_mobile_buyer"] > 3 * purchases["casual"]
    assert stats["frequent_mobile_buyer"][2] > 0.85
    assert stats["vip_big_spender"][3] > 4 * stats["casual"][3]
    # lapsed customers go silent after the first half of the period
    assert stats["lapsed_customer"][4] < START + timedelta(days=30)
    assert stats["casual"][4] > START + timedelta(days=50)
    assert stats["vip_big_spender"][5] > stats["window_shopper"][5]


def test_events_cluster_into_visits(sample: Path) -> None:
    con = duckdb.connect()
    # most consecutive events of a profile are minutes apart (visits), not days
    share = con.execute(
        """
        SELECT avg(CASE WHEN gap < 1800 THEN 1.0 ELSE 0.0 END) FROM (
          SELECT epoch(timestamp) - epoch(lag(timestamp) OVER (PARTITION BY user_id ORDER BY timestamp)) AS gap
          FROM read_parquet(?)) WHERE gap IS NOT NULL
        """,
        [str(sample)],
    ).fetchone()[0]
    assert share > 0.5


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_events(tmp_path / "x.parquet", 10, 0)
