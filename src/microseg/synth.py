"""Deterministic synthetic event streams with planted personas (benchmarks, recovery tests).

``generate_events`` writes a Parquet file of events in the default taxonomy's vocabulary
(page_view, product_view, add_to_cart, checkout_started, purchase, email_open, ...) plus a
ground-truth Parquet with the persona planted in each profile, so segment / cluster / model
tests can check that they recover what was planted.

Planted behaviours (``PERSONAS``):

* ``frequent_mobile_buyer`` — very active, ~90 % of events on mobile, many purchases.
* ``cart_abandoner`` — views and adds to cart, starts checkouts, never purchases (so every
  add_to_cart has no purchase within 24 h).
* ``window_shopper`` — only page / product views (no cart, no purchase).
* ``lapsed_customer`` — shops (incl. purchases) only in the first half of the period, then
  nothing: no events in the last half.
* ``vip_big_spender`` — very active, desktop, buys often and at ~6x the usual prices.
* ``casual`` — everyone else: a light mix of everything.

Everything is vectorised with a seeded numpy generator and written chunk by chunk (one
Parquet row group per chunk), so 100 M events never sit in memory. Output depends only on
(seed, n_events, n_profiles, start, days, chunk_rows): the same arguments give the same bytes.
Events of one profile are grouped into visits (sessions) of a few minutes; visit start times
follow a daily rhythm (evenings busiest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "add_to_cart",
    "checkout_started",
    "purchase",
    "email_open",
    "email_click",
    "video_played",
    "scroll_depth",
)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
CATEGORIES: tuple[str, ...] = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "garden",
    "jewelry",
)
# Median unit price per category (lognormal around it).
CATEGORY_PRICE: tuple[float, ...] = (180.0, 45.0, 60.0, 25.0, 55.0, 30.0, 15.0, 8.0, 40.0, 220.0)
PRODUCTS_PER_CATEGORY = 500
# Share of hourly activity, UTC hours 0..23 (evening peak).
HOURLY = np.array(
    [
        1,
        0.6,
        0.4,
        0.3,
        0.3,
        0.5,
        1,
        2,
        3,
        3.5,
        3.8,
        4,
        4.2,
        4,
        3.8,
        3.8,
        4,
        4.5,
        5.5,
        6.5,
        7,
        6,
        4,
        2,
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Persona:
    """Behaviour parameters of one planted persona."""

    name: str
    share: float  # share of profiles
    activity: float  # relative event volume per profile
    mobile: float  # probability an event comes from a mobile device
    mix: tuple[float, ...]  # event-type probabilities, aligned with EVENT_TYPES
    price_factor: float = 1.0
    active_fraction: float = 1.0  # active only in the first fraction of the period
    events_per_visit: float = 4.0


PERSONAS: tuple[Persona, ...] = (
    Persona(
        "frequent_mobile_buyer",
        0.12,
        3.0,
        0.9,
        (0.20, 0.30, 0.15, 0.10, 0.15, 0.04, 0.02, 0.02, 0.02),
        events_per_visit=5,
    ),
    Persona(
        "cart_abandoner", 0.15, 1.5, 0.5, (0.25, 0.35, 0.25, 0.10, 0.0, 0.03, 0.01, 0.005, 0.005)
    ),
    Persona(
        "window_shopper",
        0.28,
        1.0,
        0.5,
        (0.45, 0.45, 0.0, 0.0, 0.0, 0.04, 0.01, 0.03, 0.02),
        events_per_visit=3,
    ),
    Persona(
        "lapsed_customer",
        0.20,
        0.8,
        0.4,
        (0.30, 0.30, 0.12, 0.08, 0.10, 0.05, 0.02, 0.02, 0.01),
        active_fraction=0.5,
    ),
    Persona(
        "vip_big_spender",
        0.05,
        4.0,
        0.15,
        (0.15, 0.30, 0.17, 0.13, 0.17, 0.04, 0.02, 0.01, 0.01),
        price_factor=6.0,
        events_per_visit=6,
    ),
    Persona("casual", 0.20, 1.0, 0.45, (0.35, 0.35, 0.08, 0.04, 0.04, 0.08, 0.03, 0.02, 0.01)),
)
PERSONA_NAMES: tuple[str, ...] = tuple(p.name for p in PERSONAS)

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.dictionary(pa.int8(), pa.string())),
        ("timestamp", pa.timestamp("us")),
        ("user_id", pa.string()),
        ("device", pa.dictionary(pa.int8(), pa.string())),
        ("product_id", pa.string()),
        ("category", pa.dictionary(pa.int8(), pa.string())),
        ("price", pa.float64()),
        ("quantity", pa.int32()),
        ("cart_value", pa.float64()),
        ("url", pa.string()),
        ("campaign_id", pa.string()),
    ]
)


@dataclass
class SynthResult:
    """What ``generate_events`` wrote."""

    path: Path
    truth_path: Path
    n_events: int
    n_profiles: int
    seed: int
    start: datetime
    days: int
    persona_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Profiles:
    persona: np.ndarray  # int8 index into PERSONAS
    cdf: np.ndarray  # cumulative event share per profile
    visits: np.ndarray  # number of visits per profile
    window: np.ndarray  # active window length in seconds
    favourite: np.ndarray  # favourite category index
    ids: pa.Array  # user ids as strings


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-mixed hash of uint64 values (vectorised)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _unit(h: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) from a uint64 hash."""
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _profiles(rng: np.random.Generator, n_profiles: int, n_events: int, days: int) -> _Profiles:
    shares = np.array([p.share for p in PERSONAS])
    counts = np.floor(shares * n_profiles).astype(np.int64)
    counts[-1] += n_profiles - counts.sum()  # the remainder are casual
    persona = rng.permutation(np.repeat(np.arange(len(PERSONAS), dtype=np.int8), counts))
    activity = np.array([p.activity for p in PERSONAS])[persona] * rng.lognormal(
        0.0, 0.5, n_profiles
    )
    share = activity / activity.sum()
    cdf = np.cumsum(share)
    cdf[-1] = 1.0
    per_visit = np.array([p.events_per_visit for p in PERSONAS])[persona]
    visits = np.maximum(1, np.ceil(share * n_events / per_visit)).astype(np.int64)
    fraction = np.array([p.active_fraction for p in PERSONAS])[persona]
    window = fraction * days * 86_400.0
    favourite = rng.integers(0, len(CATEGORIES), n_profiles).astype(np.int8)
    width = len(str(max(n_profiles - 1, 1)))
    ids = pa.array([f"u{i:0{width}d}" for i in range(n_profiles)], pa.string())
    return _Profiles(persona, cdf, visits, window, favourite, ids)


def _chunk(
    rng: np.random.Generator, prof: _Profiles, first_id: int, n: int, start_us: int, seed: int
) -> pa.RecordBatch:
    """One chunk of ``n`` events, ids first_id .. first_id + n - 1."""
    who = np.searchsorted(prof.cdf, rng.random(n), side="right")
    who = np.minimum(who, len(prof.cdf) - 1)
    persona = prof.persona[who]

    # event type: inverse CDF per persona
    etype = np.empty(n, dtype=np.int8)
    u = rng.random(n)
    for i, p in enumerate(PERSONAS):
        sel = persona == i
        if sel.any():
            cum = np.cumsum(np.array(p.mix) / sum(p.mix))
            etype[sel] = np.minimum(
                np.searchsorted(cum, u[sel], side="right"), len(EVENT_TYPES) - 1
            )

    # time: a visit of the profile (hash of profile, visit no -> day and hour), plus minutes
    visit = (rng.random(n) * prof.visits[who]).astype(np.uint64)
    key = (
        (who.astype(np.uint64) << np.uint64(24))
        ^ visit
        ^ (np.uint64(seed & 0xFFFFFFFF) << np.uint64(40))
    )
    h1 = _mix64(key)
    h2 = _mix64(h1)
    h3 = _mix64(h2)
    window_days = np.maximum(prof.window[who] / 86_400.0, 1.0)
    day = np.floor(_unit(h1) * window_days)
    hour_cdf = np.cumsum(HOURLY / HOURLY.sum())
    hour = np.minimum(np.searchsorted(hour_cdf, _unit(h2), side="right"), 23)
    visit_start = day * 86_400.0 + hour * 3_600.0 + _unit(h3) * 3_600.0
    offset = np.minimum(rng.exponential(240.0, n), 1_500.0)  # seconds into the visit
    seconds = np.minimum(visit_start + offset, prof.window[who] - 0.001)  # stay inside the window
    ts_us = start_us + (seconds * 1e6).astype(np.int64)

    mobile = np.array([p.mobile for p in PERSONAS])[persona]
    r = rng.random(n)
    device = np.where(r < mobile, 0, np.where(r < mobile + (1 - mobile) * 0.8, 1, 2)).astype(
        np.int8
    )

    cat = np.where(
        rng.random(n) < 0.6, prof.favourite[who], rng.integers(0, len(CATEGORIES), n)
    ).astype(np.int8)
    product = cat.astype(np.int64) * PRODUCTS_PER_CATEGORY + np.minimum(
        rng.zipf(1.3, n) - 1, PRODUCTS_PER_CATEGORY - 1
    )
    factor = np.array([p.price_factor for p in PERSONAS])[persona]
    price = np.round(np.array(CATEGORY_PRICE)[cat] * factor * rng.lognormal(0.0, 0.4, n), 2)
    quantity = np.minimum(rng.geometric(0.6, n), 20).astype(np.int32)

    et = np.asarray(EVENT_TYPES, dtype=object)[etype]
    has_product = np.isin(etype, [1, 2, 4])
    has_qty = np.isin(etype, [2, 4])
    is_checkout = etype == 3
    is_page = np.isin(etype, [0, 8])
    is_email = np.isin(etype, [5, 6])
    del et

    ids = pc.binary_join_element_wise(
        "e", pc.cast(pa.array(np.arange(first_id, first_id + n)), pa.string()), ""
    )
    pid = pc.binary_join_element_wise("p", pc.cast(pa.array(product), pa.string()), "")
    campaign = pc.binary_join_element_wise(
        "c", pc.cast(pa.array((h1 % np.uint64(12)).astype(np.int64)), pa.string()), ""
    )
    url = pc.binary_join_element_wise(
        "/c/",
        pa.DictionaryArray.from_arrays(pa.array(cat), pa.array(CATEGORIES)).cast(pa.string()),
        "",
    )
    return pa.RecordBatch.from_arrays(
        [
            ids,
            pa.DictionaryArray.from_arrays(pa.array(etype), pa.array(EVENT_TYPES)),
            pa.array(ts_us, pa.timestamp("us")),
            prof.ids.take(pa.array(who)),
            pa.DictionaryArray.from_arrays(pa.array(device), pa.array(DEVICES)),
            pc.if_else(pa.array(has_product), pid, pa.scalar(None, pa.string())),
            pa.DictionaryArray.from_arrays(
                pa.array(cat, mask=~(has_product | is_page)), pa.array(CATEGORIES)
            ),
            pa.array(price, mask=~has_product),
            pa.array(quantity, mask=~has_qty),
            pa.array(np.round(price * quantity, 2), mask=~is_checkout),
            pc.if_else(pa.array(is_page), url, pa.scalar(None, pa.string())),
            pc.if_else(pa.array(is_email), campaign, pa.scalar(None, pa.string())),
        ],
        schema=SCHEMA,
    )


def generate_events(
    path: str | Path,
    n_events: int,
    n_profiles: int,
    seed: int = 0,
    start: datetime = datetime(2024, 1, 1),
    days: int = 90,
    chunk_rows: int = 1_000_000,
    truth_path: str | Path | None = None,
) -> SynthResult:
    """Write ``n_events`` synthetic events of ``n_profiles`` profiles to a Parquet file.

    ``start`` is a naive UTC datetime; events fall in [start, start + days). The ground truth
    (user_id, persona, favourite_category, active_until) goes to ``truth_path`` (default:
    ``<path stem>.truth.parquet`` next to ``path``)."""
    if n_events < 0 or n_profiles < 1 or days < 1 or chunk_rows < 1:
        raise ValueError("need n_events >= 0, n_profiles >= 1, days >= 1, chunk_rows >= 1")
    began = time.perf_counter()
    path = Path(path)
    truth = (
        Path(truth_path)
        if truth_path
        else path.with_name(path.name.split(".")[0] + ".truth.parquet")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seq = np.random.SeedSequence(seed)
    prof_seq, chunk_seq = seq.spawn(2)
    prof = _profiles(np.random.default_rng(prof_seq), n_profiles, max(n_events, 1), days)
    start_us = int((start - datetime(1970, 1, 1)).total_seconds() * 1_000_000)

    n_chunks = (n_events + chunk_rows - 1) // chunk_rows
    with pq.ParquetWriter(path, SCHEMA, compression="snappy") as writer:
        for i, child in enumerate(chunk_seq.spawn(n_chunks)):
            first = i * chunk_rows
            n = min(chunk_rows, n_events - first)
            batch = _chunk(np.random.default_rng(child), prof, first, n, start_us, seed)
            writer.write_table(pa.Table.from_batches([batch]), row_group_size=n)

    active_until = np.datetime64(start, "us") + (prof.window * 1e6).astype("timedelta64[us]")
    truth_table = pa.table(
        {
            "user_id": prof.ids,
            "persona": pa.DictionaryArray.from_arrays(
                pa.array(prof.persona), pa.array(PERSONA_NAMES)
            ).cast(pa.string()),
            "favourite_category": pa.DictionaryArray.from_arrays(
                pa.array(prof.favourite), pa.array(CATEGORIES)
            ).cast(pa.string()),
            "active_until": pa.array(active_until, pa.timestamp("us")),
        }
    )
    pq.write_table(truth_table, truth)
    counts = np.bincount(prof.persona, minlength=len(PERSONAS))
    return SynthResult(
        path=path,
        truth_path=truth,
        n_events=n_events,
        n_profiles=n_profiles,
        seed=seed,
        start=start,
        days=days,
        persona_counts={name: int(c) for name, c in zip(PERSONA_NAMES, counts, strict=True)},
        seconds=time.perf_counter() - began,
    )
