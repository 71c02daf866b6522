"""Product recommendations (C4): strategies by name, fitting on the store, template access.

>>> rec = fit_recommender(ws.store, "cooccurrence", as_of=datetime(2011, 9, 1))
>>> rec.recommend(["p1", "p2"], k=10)          # profile_id, rank, item, score, reason
>>> recommendations_for(ws.store, "p1", k=3)   # plain dicts for a template context

Strategies: ``popularity``, ``recently_viewed``, ``abandoned_cart``, ``category_affinity``,
``cooccurrence`` (item-item cosine over what profiles bought), ``basket_cooccurrence``
(item-item over orders / sessions), ``segment_popularity`` (reads ``memberships``) and
``buy_again`` (items bought before; only with ``exclude_seen=False``) and ``blend`` (all but
buy_again, weighted; cart and views first, popularity as the fallback).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pandas as pd

from microseg.errors import ConfigError, did_you_mean
from microseg.personalize.recommend_data import EventMapping, Interactions, load_interactions
from microseg.personalize.recommend_similar import (
    BlendedRecommender,
    CategoryAffinityRecommender,
    ItemCooccurrenceRecommender,
    SegmentPopularityRecommender,
)
from microseg.personalize.recommenders import (
    AbandonedCartRecommender,
    BuyAgainRecommender,
    PopularityRecommender,
    RecentlyViewedRecommender,
    Recommender,
)
from microseg.store import Store
from microseg.store.duckdb_store import utcnow

Factory = Callable[[Store | None], Recommender]

BLEND_WEIGHTS: dict[str, float] = {
    "abandoned_cart": 3.0,
    "recently_viewed": 2.0,
    "cooccurrence": 1.5,
    "category_affinity": 1.0,
    "segment_popularity": 0.5,
    "popularity": 0.25,
}


def _segment(store: Store | None) -> Recommender:
    if store is None:
        raise ConfigError("segment_popularity needs the store (it reads memberships)")
    return SegmentPopularityRecommender(store)


STRATEGIES: dict[str, Factory] = {
    "popularity": lambda _s: PopularityRecommender(),
    "recently_viewed": lambda _s: RecentlyViewedRecommender(),
    "abandoned_cart": lambda _s: AbandonedCartRecommender(),
    "category_affinity": lambda _s: CategoryAffinityRecommender(),
    "cooccurrence": lambda _s: ItemCooccurrenceRecommender(unit="profile"),
    "basket_cooccurrence": lambda _s: ItemCooccurrenceRecommender(unit="basket"),
    "segment_popularity": _segment,
    "buy_again": lambda _s: BuyAgainRecommender(),
}


def default_blend(store: Store | None, weights: dict[str, float] | None = None) -> Recommender:
    """The blended recommender (segment popularity only when a store is given)."""
    weights = weights or BLEND_WEIGHTS
    parts = []
    for name, weight in weights.items():
        if name == "segment_popularity" and store is None:
            continue
        parts.append((make_recommender(name, store), weight))
    return BlendedRecommender(parts)


def make_recommender(strategy: str, store: Store | None = None) -> Recommender:
    """A fresh (unfitted) recommender by strategy name."""
    if strategy == "blend":
        return default_blend(store)
    factory = STRATEGIES.get(strategy)
    if factory is None:
        raise ConfigError(
            f"unknown recommendation strategy '{strategy}'"
            + did_you_mean(strategy, [*STRATEGIES, "blend"])
        )
    return factory(store)


def strategy_names() -> list[str]:
    """Every strategy name, blend last."""
    return [*STRATEGIES, "blend"]


def fit_recommender(
    store: Store,
    strategy: str = "blend",
    *,
    as_of: datetime | None = None,
    mapping: EventMapping | None = None,
    data: Interactions | None = None,
) -> Recommender:
    """Fit ``strategy`` on the store's events strictly before ``as_of`` (default now)."""
    rec = make_recommender(strategy, store)
    data = data or load_interactions(store, as_of or utcnow(), mapping)
    return rec.fit(data)


def recommend(
    store: Store,
    profile_ids: list[str],
    *,
    k: int = 10,
    strategy: str = "blend",
    as_of: datetime | None = None,
    mapping: EventMapping | None = None,
    exclude_seen: bool = True,
) -> pd.DataFrame:
    """Fit and recommend in one call (profile_id, rank, item, score, reason)."""
    rec = fit_recommender(store, strategy, as_of=as_of, mapping=mapping)
    return rec.recommend(profile_ids, k, exclude_seen=exclude_seen)


# -- template access -------------------------------------------------------------------------
_CACHE: weakref.WeakKeyDictionary[Store, dict[Any, tuple[Any, float, Recommender]]] = (
    weakref.WeakKeyDictionary()
)
_CACHE_LOCK = threading.Lock()
MAX_MODEL_AGE_SECONDS = 300.0
MAX_CACHED_MODELS = 8  # per store (strategy x as_of x mapping)


def _fingerprint(store: Store) -> tuple[Any, ...]:
    """Changes whenever events, identities or memberships change."""
    events = store.rows("SELECT count(*), max(received_at) FROM events")[0]
    ids = store.scalar("SELECT count(*) FROM identities")
    members = store.rows("SELECT count(*), max(entered_at) FROM memberships")[0]
    return (*events, ids, *members)


def cached_recommender(
    store: Store,
    strategy: str = "blend",
    *,
    as_of: datetime | None = None,
    mapping: EventMapping | None = None,
) -> Recommender:
    """A fitted recommender, reused while the store's data is unchanged.

    With ``as_of`` None the model is fitted "now" and refitted after
    ``MAX_MODEL_AGE_SECONDS`` (recency weights and cart idleness depend on the time).
    """
    key = (strategy, as_of, mapping or EventMapping())
    fingerprint = _fingerprint(store)
    with _CACHE_LOCK:
        hit = _CACHE.get(store, {}).get(key)
    fresh = as_of is not None or (
        hit is not None and time.monotonic() - hit[1] < MAX_MODEL_AGE_SECONDS
    )
    if hit is not None and hit[0] == fingerprint and fresh:
        return hit[2]
    rec = fit_recommender(store, strategy, as_of=as_of, mapping=mapping)
    with _CACHE_LOCK:
        models = _CACHE.setdefault(store, {})
        models.pop(key, None)
        models[key] = (fingerprint, time.monotonic(), rec)
        while len(models) > MAX_CACHED_MODELS:  # oldest fit first (dicts keep insertion order)
            models.pop(next(iter(models)))
    return rec


def recommendations_for(
    store: Store,
    profile_id: str,
    k: int = 5,
    *,
    strategy: str = "blend",
    as_of: datetime | None = None,
    mapping: EventMapping | None = None,
) -> list[dict[str, Any]]:
    """A profile's recommendations as plain dicts for a template context.

    Each dict has ``rank``, ``item``, ``score``, ``reason`` and, when the events carry them,
    ``name``, ``category`` and ``price`` (latest seen values) — e.g. in a template::

        {% for r in recommendations %}{{ r.name or r.item }} ({{ r.reason }}){% endfor %}
    """
    rec = cached_recommender(store, strategy, as_of=as_of, mapping=mapping)
    df = rec.recommend([profile_id], k)
    assert rec.data is not None
    info = _item_info(rec)
    out = []
    for row in df.itertuples(index=False):
        item: dict[str, Any] = {
            "rank": int(row.rank),
            "item": str(row.item),
            "score": round(float(row.score), 6),
            "reason": str(row.reason),
        }
        if row.item in info.index:
            for col, value in info.loc[row.item].items():
                if value is not None and not pd.isna(value):
                    item[str(col)] = float(value) if col == "price" else str(value)
        out.append(item)
    return out


def _item_info(rec: Recommender) -> pd.DataFrame:
    cached = getattr(rec, "_item_info_cache", None)
    if cached is None:
        assert rec.data is not None
        cached = rec.data.item_info()
        rec._item_info_cache = cached  # type: ignore[attr-defined]
    return cached
