"""Fixtures for the DuckDB/Spark parity suite: one Spark session, a store with planted data,
a trait set with every trait kind and segments with every condition type."""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

from microseg.config.models import ProjectSettings
from microseg.config.yamlio import parse_text, validate_model
from microseg.segments.ast import Segment
from microseg.segments.parse import parse_segment
from microseg.store import Store

AS_OF = datetime(2024, 6, 30, 12, 0, 0)
N_PROFILES = 160
STORES = {
    "downtown": (40.7128, -74.0060),
    "midtown": (40.7549, -73.9840),
    "sf": (37.7749, -122.4194),
}


def settings() -> ProjectSettings:
    """The project template's settings (its taxonomy declares every event property used)."""
    text = (resources.files("microseg.config") / "templates" / "microseg.yaml").read_text()
    return validate_model(ProjectSettings, parse_text(text, "microseg.yaml"))


# --------------------------------------------------------------------------- Spark session
@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """ONE local Spark session for the suite; skipped without pyspark/java unless CI=true."""
    from microseg.engines.spark import local_session, unavailable_reason

    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Spark parity suite cannot run on CI: {reason}")
        pytest.skip(f"Spark parity suite skipped: {reason}")
    session = local_session(cores=2, shuffle_partitions=4, codegen=False)
    yield session
    session.stop()


def segments_module(name: str) -> ModuleType:
    """A module of tests/segments (the fixed data with hand-checked golden memberships)."""
    if name in sys.modules:
        return sys.modules[name]
    if name != "segments_support":
        segments_module("segments_support")  # the test modules import it by name
    path = Path(__file__).resolve().parents[1] / "segments" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- planted data
def _only(mask: Any, values: Any) -> Any:
    """``values`` where ``mask`` holds, else None (np.where with an object fill)."""
    return np.where(mask, values, np.array(None, dtype=object))


def _events(rng: np.random.Generator, pids: list[str]) -> pd.DataFrame:
    n = 7000
    types = np.array(
        [
            "page_view",
            "product_view",
            "add_to_cart",
            "checkout_started",
            "purchase",
            "email_open",
            "email_click",
            "store_visit",
            "video_played",
        ]
    )
    et = types[rng.choice(len(types), n, p=[0.2, 0.3, 0.1, 0.05, 0.1, 0.08, 0.07, 0.05, 0.05])]
    # minute-rounded times over 100 days before AS_OF plus some after it (must be ignored)
    offset = rng.integers(-3 * 1440, 100 * 1440, n)
    ts = pd.Timestamp(AS_OF) - pd.to_timedelta(offset, unit="min")
    owner = rng.integers(0, len(pids), n)
    commerce = np.isin(et, ["product_view", "add_to_cart", "purchase"])
    cats = np.array(["running shoes", "phones", "kitchen", "books", "phone cases"])
    df = pd.DataFrame(
        {
            "pid": [pids[i] for i in owner],
            "event_type": et,
            "ts": ts,
            "url": _only(
                np.isin(et, ["page_view", "email_click"]), rng.choice(["/a", "/b", "/c"], n)
            ),
            "device": _only(
                np.isin(et, ["page_view", "product_view"]),
                rng.choice(["mobile", "desktop", "tablet"], n, p=[0.5, 0.35, 0.15]),
            ),
            "time_spent": np.where(et == "page_view", rng.integers(1, 300, n), np.nan),
            "product_id": _only(commerce, rng.choice(["s1", "s2", "s3", "s4"], n)),
            "category": _only(commerce, rng.choice(cats, n)),
            "price": np.where(commerce, rng.integers(4, 400, n) / 4, np.nan),
            "quantity": np.where(
                np.isin(et, ["add_to_cart", "purchase"]), rng.integers(1, 4, n), np.nan
            ),
            "cart_value": np.where(et == "checkout_started", rng.integers(10, 500, n), np.nan),
            "order_id": _only(et == "purchase", [f"o{i // 2}" for i in range(n)]),
            "revenue": np.where(et == "purchase", rng.integers(5, 300, n) * 1.0, np.nan),
            "campaign_id": _only(
                np.isin(et, ["email_open", "email_click"]), rng.choice(["c1", "c2"], n)
            ),
            "store_id": _only(et == "store_visit", rng.choice(["downtown", "sf"], n)),
            "region": _only(et == "store_visit", "NY"),
            "video_id": _only(et == "video_played", "v1"),
            "percent_watched": np.where(et == "video_played", rng.integers(0, 100, n), np.nan),
        }
    )
    # planted sequences: add_to_cart followed by a purchase 0-48 h later (exact 24 h for some)
    planted = []
    for k, pid in enumerate(pids[: len(pids) // 2]):
        start = pd.Timestamp(AS_OF) - pd.Timedelta(days=int(rng.integers(1, 20)), minutes=k)
        gap = (
            pd.Timedelta(hours=24)
            if k % 7 == 0
            else pd.Timedelta(minutes=int(rng.integers(1, 2880)))
        )
        planted.append(
            {
                "pid": pid,
                "event_type": "add_to_cart",
                "ts": start,
                "product_id": "s9",
                "category": "phones",
                "price": 20.0,
                "quantity": 1.0,
            }
        )
        if k % 3:
            planted.append(
                {
                    "pid": pid,
                    "event_type": "purchase",
                    "ts": start + gap,
                    "product_id": "s9",
                    "category": "phones",
                    "price": 20.0,
                    "quantity": 1.0,
                    "order_id": f"po{k}",
                    "revenue": 20.0,
                }
            )
    # boundary: events exactly at as_of - 7d (excluded by last: 7d) and exactly at as_of
    planted.append(
        {
            "pid": pids[-1],
            "event_type": "purchase",
            "ts": pd.Timestamp(AS_OF - timedelta(days=7)),
            "order_id": "edge1",
            "revenue": 50.0,
            "quantity": 1.0,
            "price": 50.0,
        }
    )
    planted.append(
        {
            "pid": pids[-2],
            "event_type": "purchase",
            "ts": pd.Timestamp(AS_OF),
            "order_id": "edge2",
            "revenue": 50.0,
            "quantity": 1.0,
            "price": 50.0,
        }
    )
    df = pd.concat([df, pd.DataFrame(planted)], ignore_index=True)
    df["ts"] = df["ts"].dt.floor("min")
    df["session_id"] = df["pid"] + "-" + df["ts"].dt.strftime("%j")
    return df


def parity_store(cfg: ProjectSettings, seed: int = 8, path: Path | None = None) -> Store:
    """An in-memory store: events of N_PROFILES profiles (some with two identities, one
    merged away, some with no events), CRM attributes, consents and model scores."""
    rng = np.random.default_rng(seed)
    pids = [f"u{i:03d}" for i in range(N_PROFILES)]
    active = pids[:-10]  # the last ten profiles have no events
    ev = _events(rng, active)
    store = Store(path)
    store.ensure_columns("events", cfg.taxonomy.property_columns())
    # every fifth profile's events come half from an anonymous id linked to it
    anon = (ev["pid"].str[1:].astype(int) % 5 == 0) & (rng.random(len(ev)) < 0.5)
    ev["id_key"] = np.where(anon, "anonymous_id:a-" + ev["pid"], "user_id:" + ev["pid"])
    ev["event_id"] = [f"e{i:05d}" for i in range(len(ev))]
    ev["received_at"] = ev["ts"]
    ev["source"] = "test"
    frame = ev.drop(columns=["pid"])
    store.con.register("_ev", frame)
    store.execute("INSERT INTO events BY NAME SELECT * FROM _ev")
    store.con.unregister("_ev")
    stamp = AS_OF - timedelta(days=200)
    for i, pid in enumerate(pids):
        merged = "u001" if pid == "u002" else None  # u002 was merged into u001
        store.execute("INSERT INTO profiles VALUES (?, ?, ?, ?)", [pid, stamp, stamp, merged])
        owner = "u001" if pid == "u002" else pid
        store.execute(
            "INSERT INTO identities VALUES (?, 'user_id', ?, ?, NULL, NULL, 'test', NULL)",
            [f"user_id:{pid}", pid, owner],
        )
        if i % 5 == 0:
            store.execute(
                "INSERT INTO identities VALUES (?, 'anonymous_id', ?, ?, NULL, NULL, 'test', NULL)",
                [f"anonymous_id:a-{pid}", f"a-{pid}", pid],
            )
        _attributes(store, rng, pid, i, stamp)
        _consents_scores(store, rng, pid, i)
    return store


def _attributes(store: Store, rng: np.random.Generator, pid: str, i: int, stamp: datetime) -> None:
    near = list(STORES.values())[i % 3]
    rows: list[tuple[str, str | None, float | None]] = [
        ("age", None, float(rng.integers(18, 70))),
        ("tier", ["gold", "silver", "bronze"][i % 3] if i % 4 else None, None),
        ("postal_code", ["10001", "10007", "94105", "94110", "E1 6AN", "19104"][i % 6], None),
    ]
    if i % 6:  # some profiles have no location
        rows += [
            ("latitude", None, near[0] + float(rng.normal(0, 0.05))),
            ("longitude", None, near[1] + float(rng.normal(0, 0.05))),
        ]
    for name, value, num in rows:
        if value is None and num is None:
            continue
        store.execute(
            "INSERT INTO profile_attributes VALUES (?, ?, ?, ?, 'crm', ?)",
            [pid, name, value, num, stamp],
        )


def _consents_scores(store: Store, rng: np.random.Generator, pid: str, i: int) -> None:
    if i % 3 == 0:
        expires = AS_OF - timedelta(days=1) if i % 9 == 0 else None  # some expired
        store.execute(
            "INSERT INTO consents VALUES (?, 'email_marketing', true, 'test', ?, ?)",
            [pid, AS_OF - timedelta(days=30), expires],
        )
    if i % 7 == 0:  # granted then withdrawn at the same time: withdrawal wins the tie
        for granted in (True, False):
            store.execute(
                "INSERT INTO consents VALUES (?, 'email_marketing', ?, 'test', ?, NULL)",
                [pid, granted, AS_OF - timedelta(days=5)],
            )
    if i % 2 == 0:
        for version, days in ((1, 20), (2, 2), (3, -1)):  # version 3 is after as_of
            store.execute(
                "INSERT INTO scores VALUES (?, 'churn', ?, ?, ?)",
                [pid, version, round(float(rng.random()), 6), AS_OF - timedelta(days=days)],
            )


# --------------------------------------------------------------------------- definitions
TRAITS = """
traits:
  - {name: n_events, kind: count}
  - {name: views_30d, kind: count, events: [product_view], window: {last: 30d}}
  - {name: cheap_views, kind: count, events: [product_view], where: {price: {lt: 20}}}
  - {name: run_views, kind: count, events: [product_view], where: {category: {like: 'running%'}}}
  - {name: not_books, kind: count, events: [purchase], where: {category: {not_in: [books]}}}
  - {name: phones_rx, kind: count, where: {category: {matches: '(?i)^PH'}}}
  - {name: april_purchases, kind: count, events: [purchase],
     window: {between: [2024-04-01T00:00:00, 2024-05-01T00:00:00]}}
  - {name: monetary, kind: sum, expression: quantity * price, events: [purchase]}
  - {name: spend_60d, kind: sum, expression: (quantity * price) - 1, events: [purchase],
     window: {last: 60d}}
  - {name: avg_price, kind: avg, property: price, events: [product_view, purchase]}
  - {name: min_price, kind: min, property: price}
  - {name: max_qty, kind: max, property: quantity, events: [purchase]}
  - {name: n_categories, kind: distinct_count, property: category}
  - {name: first_category, kind: first, property: category, events: [product_view]}
  - {name: last_device, kind: last, property: device}
  - {name: days_since_purchase, kind: recency_days, events: [purchase]}
  - {name: rfm, kind: rfm, events: [purchase], monetary: quantity * price, frequency_of: order_id}
  - {name: rfm_90, kind: rfm, events: [purchase], monetary: revenue, window: {last: 90d}}
  - {name: dominant_device, kind: dominant, property: device}
  - {name: fav_hour, kind: preferred_hour, events: [page_view, product_view]}
  - {name: top_cat, kind: top, property: category, weight: quantity * price, events: [purchase]}
  - name: engagement
    kind: engagement
    weights: {purchase: 10, add_to_cart: 4, product_view: 1, email_open: 0.5}
    half_life_days: 10
    labels: {method: quantiles, highly_engaged: 0.75, moderately_engaged: 0.3}
  - name: engagement_t
    kind: engagement
    weights: {purchase: 5, page_view: 1}
    half_life_days: 30
    window: {last: 60d}
    labels: {method: thresholds, highly_engaged: 6, moderately_engaged: 2}
  - name: interests
    kind: interest_tags
    min_count: 2
    cap: 2
    window: {last: 90d}
    rules:
      - {tag: Sports > Running, events: [product_view, purchase], where: {category: {like: 'running%'}}}
      - {tag: Sports > Running, events: [add_to_cart], where: {category: running shoes}}
      - {tag: Electronics > Phones, events: [product_view], where: {category: {matches: '(?i)phone'}}}
      - {tag: Home > Kitchen, where: {category: kitchen}}
      - {tag: Books, events: [purchase], where: {category: books}}
  - {name: age, kind: attribute, attribute: age, dtype: number}
  - {name: tier, kind: attribute, attribute: tier}
  - {name: postal_code, kind: attribute, attribute: postal_code}
  - {name: latitude, kind: attribute, attribute: latitude, dtype: number}
  - {name: longitude, kind: attribute, attribute: longitude, dtype: number}
"""

STORE_POINTS = {name: {"lat": lat, "lon": lon} for name, (lat, lon) in STORES.items()}

SEGMENTS: list[dict[str, Any]] = [
    # trait comparisons: every operator
    {"name": "t_eq", "rule": {"trait": "dominant_device", "eq": "mobile"}},
    {"name": "t_ne", "rule": {"trait": "tier", "ne": "gold"}},
    {"name": "t_gt", "rule": {"trait": "monetary", "gt": 300}},
    {"name": "t_gte", "rule": {"trait": "n_events", "gte": 50}},
    {"name": "t_lt", "rule": {"trait": "age", "lt": 30}},
    {"name": "t_lte", "rule": {"trait": "avg_price", "lte": 45.5}},
    {"name": "t_between", "rule": {"trait": "age", "between": [25, 34]}},
    {"name": "t_in", "rule": {"trait": "top_cat", "in": ["phones", "kitchen"]}},
    {"name": "t_not_in", "rule": {"trait": "last_device", "not_in": ["desktop"]}},
    {"name": "t_exists", "rule": {"trait": "days_since_purchase", "exists": True}},
    {"name": "t_missing", "rule": {"trait": "tier", "exists": False}},
    {"name": "t_contains_list", "rule": {"trait": "interests", "contains": "Electronics > Phones"}},
    {"name": "t_contains_text", "rule": {"trait": "first_category", "contains": "phone"}},
    {"name": "t_regex", "rule": {"trait": "postal_code", "regex": "^94[0-9]{3}$"}},
    {"name": "t_label", "rule": {"trait": "engagement_label", "eq": "Highly Engaged"}},
    {"name": "t_rfm", "rule": {"trait": "rfm", "in": ["Champions", "Loyal", "At Risk"]}},
    # quantile thresholds (population-relative)
    {"name": "q_top", "rule": {"trait": "monetary", "gte": {"quantile": 0.8}}},
    {"name": "q_low", "rule": {"trait": "engagement", "lt": {"quantile": 0.25}}},
    # event aggregates: rolling and absolute windows, property filters, every aggregate
    {"name": "e_count", "rule": {"event": "purchase", "last": "30d", "gte": 2}},
    {
        "name": "e_sum_abs",
        "rule": {
            "event": "purchase",
            "aggregate": "sum",
            "of": "revenue",
            "since": "2024-04-01T00:00:00",
            "until": "2024-06-01T00:00:00",
            "gt": 150,
        },
    },
    {
        "name": "e_avg_where",
        "rule": {
            "event": "product_view",
            "where": {"category": {"in": ["phones", "phone cases"]}, "price": {"gte": 10}},
            "aggregate": "avg",
            "of": "price",
            "last": "60d",
            "gt": 50,
        },
    },
    {
        "name": "e_min_max",
        "rule": {
            "all": [
                {
                    "event": "add_to_cart",
                    "aggregate": "min",
                    "of": "price",
                    "last": "90d",
                    "lt": 20,
                },
                {
                    "event": "add_to_cart",
                    "aggregate": "max",
                    "of": "price",
                    "last": "90d",
                    "gte": 60,
                },
            ]
        },
    },
    {
        "name": "e_distinct",
        "rule": {
            "event": ["product_view", "add_to_cart"],
            "aggregate": "count_distinct",
            "of": "product_id",
            "last": "30d",
            "gte": 3,
        },
    },
    {"name": "e_never", "rule": {"event": "purchase", "last": "14d", "lt": 1}},
    {
        "name": "e_regex_like",
        "rule": {"event": "page_view", "where": {"url": {"regex": "^/[ab]$"}}, "last": "7d"},
    },
    # within-session and same-property groups
    {
        "name": "e_session",
        "rule": {"event": "product_view", "per_session": True, "same": ["product_id"], "gte": 2},
    },
    {"name": "e_same", "rule": {"event": "email_click", "same": ["url"], "last": "30d", "gte": 2}},
    # sequences: A then B within T, A not followed by B
    {
        "name": "seq_then",
        "rule": {"first": "add_to_cart", "then": "purchase", "within": "24h", "last": "30d"},
    },
    {
        "name": "seq_drop",
        "rule": {
            "first": "add_to_cart",
            "first_where": {"category": "phones"},
            "not_then": ["checkout_started", "purchase"],
            "within": "6h",
            "last": "21d",
        },
    },
    # recency
    {"name": "r_newer", "rule": {"recency": "purchase", "newer_than": "7d"}},
    {"name": "r_older", "rule": {"recency": "purchase", "older_than": "30d"}},
    {
        "name": "r_or_never",
        "rule": {"recency": "store_visit", "older_than": "20d", "or_never": True},
    },
    # geo: a point, a named store, several stores; postal codes
    {"name": "g_point", "rule": {"geo": {"lat": 40.7128, "lon": -74.006, "radius": "5km"}}},
    {
        "name": "g_store",
        "stores": STORE_POINTS,
        "rule": {"geo": {"store": "midtown", "radius": "3mi"}},
    },
    {
        "name": "g_stores",
        "stores": STORE_POINTS,
        "rule": {"geo": {"stores": ["downtown", "sf"], "radius": "4km"}},
    },
    {"name": "postal", "rule": {"postal_code": ["10001", "941*"]}},
    # model scores, consent, random bucket
    {"name": "m_score", "rule": {"trait": "score.churn", "gte": 0.5}},
    {"name": "m_score_q", "rule": {"trait": "score.churn", "lt": {"quantile": 0.3}}},
    {"name": "consent", "rule": {"consent": "email_marketing"}},
    {"name": "bucket", "rule": {"bucket": {"salt": "holdout-2024", "of": 100, "range": [0, 30]}}},
    # references and nesting
    {
        "name": "nested",
        "rule": {
            "all": [
                {"any": [{"segment": "q_top"}, {"recency": "purchase", "newer_than": "7d"}]},
                {"segment": "consent"},
                {"not": {"segment": "bucket"}},
                {"not": {"any": [{"trait": "tier", "eq": "bronze"}, {"segment": "t_missing"}]}},
            ]
        },
    },
    {"name": "nested_ref", "rule": {"any": [{"segment": "nested"}, {"segment": "seq_then"}]}},
]


def parity_segments() -> dict[str, Segment]:
    return {d["name"]: parse_segment(d) for d in SEGMENTS}


# --------------------------------------------------------------------------- comparison
def _missing(x: Any) -> bool:
    if x is None or x is pd.NA:
        return True
    return isinstance(x, float) and math.isnan(x)


def _plain(x: Any) -> Any:
    if _missing(x):
        return None
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, pd.Timestamp):
        return x.to_pydatetime()
    return x


def trait_differences(duck: pd.DataFrame, spark: pd.DataFrame, tol: float = 1e-9) -> list[str]:
    """Every (column, profile) where the engines disagree; floats compared to ``tol``."""
    problems: list[str] = []
    if list(duck.columns) != list(spark.columns):
        return [f"columns differ: {list(duck.columns)} vs {list(spark.columns)}"]
    a = duck.sort_values("profile_id", ignore_index=True)
    b = spark.sort_values("profile_id", ignore_index=True)
    if list(a["profile_id"]) != list(b["profile_id"]):
        return ["profile ids differ"]
    for column in a.columns:
        for pid, x, y in zip(a["profile_id"], a[column], b[column], strict=True):
            x, y = _plain(x), _plain(y)
            if isinstance(x, float) or isinstance(y, float):
                same = (x is None and y is None) or (
                    x is not None and y is not None and abs(float(x) - float(y)) <= tol
                )
            else:
                same = x == y
            if not same:
                problems.append(f"{column}[{pid}]: duckdb={x!r} spark={y!r}")
    return problems
