"""The benchmark's 20 segments (default taxonomy and traits) and the same rules in pandas.

Every condition family the batch path compiles appears at least once: trait comparisons,
quantile thresholds, event counts / sums / distinct counts with property filters in windows,
within-session counts, sequences (then / not then), recency, random buckets, segment
references and nested all / any / not. The pandas versions follow the documented time
semantics of ``segments.compile_events`` (``last: d`` keeps ``as_of - d < ts <= as_of``; a
drop-off is settled once ``a.ts + T <= as_of``) so the two can be compared member for member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

Members = set[str]


@dataclass
class Frames:
    """What the pandas rules read: events (with profile_id) and the traits table."""

    events: pd.DataFrame  # profile_id, event_type, ts, session_id, product_id, category, price
    traits: pd.DataFrame  # indexed by profile_id
    as_of: datetime

    def window(self, event_type: str, days: float) -> pd.DataFrame:
        ev = self.events
        lo = self.as_of - timedelta(days=days)
        return ev[(ev["event_type"] == event_type) & (ev["ts"] > lo) & (ev["ts"] <= self.as_of)]

    def count(self, event_type: str, days: float) -> pd.Series:
        return self.window(event_type, days).groupby("profile_id").size()

    def trait(self, name: str) -> pd.Series:
        return self.traits[name]


def _ids(mask: pd.Series) -> Members:
    return set(mask[mask.fillna(False).astype(bool)].index.astype(str))


def _count_at_least(f: Frames, event_type: str, days: float, n: int) -> Members:
    counts = f.count(event_type, days)
    return set(counts[counts >= n].index)


def _sequence(
    f: Frames, first: str, second: str, within: timedelta, days: float, followed: bool
) -> Members:
    a = f.window(first, days)[["profile_id", "ts"]]
    ev = f.events
    b = ev[(ev["event_type"] == second) & (ev["ts"] <= f.as_of)][["profile_id", "ts"]]
    if not followed:
        a = a[a["ts"] + within <= f.as_of]
    if a.empty:
        return set()
    a = a.sort_values("ts").reset_index(drop=True)
    b = b.sort_values("ts").rename(columns={"ts": "b_ts"})
    # the first b strictly after each a (allow_exact_matches=False gives b_ts > ts)
    nxt = pd.merge_asof(
        a,
        b,
        left_on="ts",
        right_on="b_ts",
        by="profile_id",
        direction="forward",
        allow_exact_matches=False,
    )
    hit = nxt["b_ts"].notna() & (nxt["b_ts"] <= nxt["ts"] + within)
    chosen = nxt[hit] if followed else nxt[~hit]
    return set(chosen["profile_id"])


def _bucket(pids: pd.Index, salt: str, of: int, lo: int, hi: int) -> Members:
    out = set()
    for pid in pids:
        value = int(hashlib.md5(f"{salt}:{pid}".encode()).hexdigest()[:8], 16) % of
        if lo <= value < hi:
            out.add(str(pid))
    return out


def _s01(f: Frames, m: dict[str, Members]) -> Members:
    return _ids(f.trait("dominant_device") == "mobile") & _count_at_least(f, "purchase", 30, 2)


def _s02(f: Frames, m: dict[str, Members]) -> Members:
    views = f.window("product_view", 7)
    per = views.groupby(["profile_id", "session_id", "product_id"]).size()
    return set(per[per > 3].index.get_level_values("profile_id"))


def _s03(f: Frames, m: dict[str, Members]) -> Members:
    return _sequence(f, "add_to_cart", "purchase", timedelta(hours=24), 7, followed=False)


def _s04(f: Frames, m: dict[str, Members]) -> Members:
    views = f.window("product_view", 30)
    pricey = views[views["price"] >= 500].groupby("profile_id").size()
    buyers = set(f.count("purchase", 30).index)
    return set(pricey[pricey >= 3].index) - buyers


def _quantile(f: Frames, name: str, q: float) -> float:
    return float(f.trait(name).astype("float64").quantile(q))


def _s05(f: Frames, m: dict[str, Members]) -> Members:
    return _ids(f.trait("spend_90d") >= _quantile(f, "spend_90d", 0.9))


def _s06(f: Frames, m: dict[str, Members]) -> Members:
    return _ids(f.trait("spend_90d") > _quantile(f, "spend_90d", 0.5))


def _latest(f: Frames, event_type: str) -> pd.Series:
    ev = f.events
    return (
        ev[(ev["event_type"] == event_type) & (ev["ts"] <= f.as_of)]
        .groupby("profile_id")["ts"]
        .max()
    )


def _s07(f: Frames, m: dict[str, Members]) -> Members:
    latest = _latest(f, "purchase")
    recent = set(latest[latest > f.as_of - timedelta(days=30)].index)
    return set(f.traits.index.astype(str)) - recent


def _s08(f: Frames, m: dict[str, Members]) -> Members:
    latest = _latest(f, "purchase")
    return set(latest[latest > f.as_of - timedelta(days=7)].index)


def _s09(f: Frames, m: dict[str, Members]) -> Members:
    spend = f.window("purchase", 30).groupby("profile_id")["price"].sum()
    return set(spend[spend >= 500].index)


def _s10(f: Frames, m: dict[str, Members]) -> Members:
    cats = f.window("product_view", 7).groupby("profile_id")["category"].nunique()
    return set(cats[cats >= 3].index)


def _s11(f: Frames, m: dict[str, Members]) -> Members:
    return _count_at_least(f, "email_click", 14, 2)


def _s12(f: Frames, m: dict[str, Members]) -> Members:
    return _ids(f.trait("engagement_label") == "Highly Engaged")


def _s13(f: Frames, m: dict[str, Members]) -> Members:
    return _bucket(f.traits.index, "bench", 100, 0, 10)


def _s14(f: Frames, m: dict[str, Members]) -> Members:
    views = f.window("product_view", 3)
    elec = views[views["category"] == "electronics"].groupby("profile_id").size()
    return _ids(f.trait("top_category") == "electronics") | set(elec[elec >= 2].index)


def _s15(f: Frames, m: dict[str, Members]) -> Members:
    return _count_at_least(f, "video_played", 30, 3)


def _s16(f: Frames, m: dict[str, Members]) -> Members:
    return _sequence(f, "add_to_cart", "purchase", timedelta(hours=2), 14, followed=True)


def _s17(f: Frames, m: dict[str, Members]) -> Members:
    hour = f.trait("preferred_hour").astype("float64")
    return _ids((hour >= 0) & (hour <= 5))


def _s18(f: Frames, m: dict[str, Members]) -> Members:
    return _count_at_least(f, "product_view", 30, 10) - set(f.count("add_to_cart", 30).index)


def _s19(f: Frames, m: dict[str, Members]) -> Members:
    return m["s06_above_median_spend"] - m["s13_holdout"]


def _s20(f: Frames, m: dict[str, Members]) -> Members:
    aov = f.trait("avg_item_value").astype("float64")
    return _ids(f.trait("dominant_device") == "desktop") & _ids(aov > 100)


PandasRule = Callable[[Frames, dict[str, Members]], Members]

SEGMENTS: list[tuple[dict[str, Any], PandasRule]] = [
    (
        {
            "name": "s01_mobile_buyers",
            "rule": {
                "all": [
                    {"trait": "dominant_device", "eq": "mobile"},
                    {"event": "purchase", "last": "30d", "gte": 2},
                ]
            },
        },
        _s01,
    ),
    (
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
        _s02,
    ),
    (
        {
            "name": "s03_cart_abandon_24h",
            "rule": {"first": "add_to_cart", "not_then": "purchase", "within": "24h", "last": "7d"},
        },
        _s03,
    ),
    (
        {
            "name": "s04_pricey_browsers",
            "rule": {
                "all": [
                    {
                        "event": "product_view",
                        "where": {"price": {"gte": 500}},
                        "last": "30d",
                        "gte": 3,
                    },
                    {"event": "purchase", "last": "30d", "lt": 1},
                ]
            },
        },
        _s04,
    ),
    ({"name": "s05_top_spenders", "rule": {"trait": "spend_90d", "gte": {"quantile": 0.9}}}, _s05),
    (
        {"name": "s06_above_median_spend", "rule": {"trait": "spend_90d", "gt": {"quantile": 0.5}}},
        _s06,
    ),
    (
        {
            "name": "s07_lapsed",
            "rule": {"recency": "purchase", "older_than": "30d", "or_never": True},
        },
        _s07,
    ),
    ({"name": "s08_recent_buyers", "rule": {"recency": "purchase", "newer_than": "7d"}}, _s08),
    (
        {
            "name": "s09_big_spend_30d",
            "rule": {
                "event": "purchase",
                "aggregate": "sum",
                "of": "price",
                "last": "30d",
                "gte": 500,
            },
        },
        _s09,
    ),
    (
        {
            "name": "s10_multi_category",
            "rule": {
                "event": "product_view",
                "aggregate": "count_distinct",
                "of": "category",
                "last": "7d",
                "gte": 3,
            },
        },
        _s10,
    ),
    (
        {"name": "s11_email_engaged", "rule": {"event": "email_click", "last": "14d", "gte": 2}},
        _s11,
    ),
    (
        {
            "name": "s12_highly_engaged",
            "rule": {"trait": "engagement_label", "eq": "Highly Engaged"},
        },
        _s12,
    ),
    ({"name": "s13_holdout", "rule": {"bucket": {"salt": "bench", "range": [0, 10]}}}, _s13),
    (
        {
            "name": "s14_electronics_fans",
            "rule": {
                "any": [
                    {"trait": "top_category", "eq": "electronics"},
                    {
                        "event": "product_view",
                        "where": {"category": "electronics"},
                        "last": "3d",
                        "gte": 2,
                    },
                ]
            },
        },
        _s14,
    ),
    (
        {"name": "s15_video_watchers", "rule": {"event": "video_played", "last": "30d", "gte": 3}},
        _s15,
    ),
    (
        {
            "name": "s16_cart_then_buy",
            "rule": {"first": "add_to_cart", "then": "purchase", "within": "2h", "last": "14d"},
        },
        _s16,
    ),
    ({"name": "s17_night_owls", "rule": {"trait": "preferred_hour", "between": [0, 5]}}, _s17),
    (
        {
            "name": "s18_window_shoppers",
            "rule": {
                "all": [
                    {"event": "product_view", "last": "30d", "gte": 10},
                    {"not": {"event": "add_to_cart", "last": "30d"}},
                ]
            },
        },
        _s18,
    ),
    (
        {
            "name": "s19_vip_audience",
            "rule": {
                "all": [
                    {"segment": "s06_above_median_spend"},
                    {"not": {"segment": "s13_holdout"}},
                ]
            },
        },
        _s19,
    ),
    (
        {
            "name": "s20_desktop_high_aov",
            "rule": {
                "all": [
                    {"trait": "dominant_device", "eq": "desktop"},
                    {"trait": "avg_item_value", "gt": 100},
                ]
            },
        },
        _s20,
    ),
]


def definitions() -> list[dict[str, Any]]:
    """The 20 segment definitions (YAML-ready dicts)."""
    return [definition for definition, _ in SEGMENTS]


def pandas_memberships(frames: Frames) -> dict[str, Members]:
    """Every benchmark segment evaluated with pandas (references resolved in order)."""
    members: dict[str, Members] = {}
    for definition, rule in SEGMENTS:
        members[definition["name"]] = rule(frames, members)
    return members
