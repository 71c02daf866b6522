"""Real clickstream (REES46 head slice): batch = real-time, and batch = an independent pandas check."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from microseg.config.sources import SourceSpec
from microseg.segments import RealtimeEvaluator, compute_segments, parse_segment
from microseg.segments.membership import members
from microseg.workspace import Workspace

REES = Path("/work/shared/data/rees46_multicategory_oct2019_head/2019-Oct_head.csv.gz")
SPEC = {
    "fields": {"timestamp": "event_time", "session_id": "user_session", "category": "category_code"}
}
AS_OF = datetime(2019, 10, 1, 2, 50)
SEGMENTS = [
    {
        "name": "cart_abandon_10m",
        "rule": {"first": "add_to_cart", "not_then": "purchase", "within": "10m", "last": "3h"},
    },
    {
        "name": "repeat_viewers",
        "rule": {"event": "product_view", "per_session": True, "same": ["product_id"], "gt": 2},
    },
    {"name": "busy_last_hour", "rule": {"event": "product_view", "last": "1h", "gte": 5}},
    {
        "name": "cart_then_buy",
        "rule": {"first": "add_to_cart", "then": "purchase", "within": "30m"},
    },
    {
        "name": "big_basket",
        "rule": {"event": "purchase", "aggregate": "sum", "of": "price", "gte": 500},
    },
    {
        "name": "browsers_not_buyers",
        "rule": {
            "all": [
                {"event": "product_view", "where": {"price": {"gte": 300}}, "gte": 3},
                {"not": {"recency": "purchase", "newer_than": "3h"}},
            ]
        },
    },
]


@pytest.fixture(scope="module")
def ws() -> Any:
    if not REES.exists():
        pytest.skip(f"dataset {REES} not available")
    from segments_support import template_settings

    w = Workspace.ephemeral(template_settings())
    r = w.import_events(REES, spec=SourceSpec.model_validate(SPEC), source="rees46")
    assert r.inserted == 17_434
    yield w
    w.close()


def test_real_data_batch_equals_realtime(ws: Any) -> None:
    segs = [parse_segment(s) for s in SEGMENTS]
    for as_of in (AS_OF, AS_OF - timedelta(minutes=47)):
        compute_segments(ws, segments=segs, as_of=as_of)
        rt = RealtimeEvaluator.from_store(ws.store, ws.settings, segs, start=datetime(2019, 9, 30))
        cur = ws.store.execute(
            "SELECT i.profile_id, e.event_type, e.ts, e.session_id, e.product_id, e.price"
            " FROM events e JOIN identities i USING (id_key) WHERE e.ts <= ? ORDER BY e.ts",
            [as_of],
        )
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            rt.on_event(dict(zip(names, row, strict=True)))
        rt.sweep(as_of)
        sizes = {}
        for seg in segs:
            batch = members(ws.store, seg.name)
            assert rt.members_of(seg.name) == batch, seg.name
            sizes[seg.name] = len(batch)
        if as_of == AS_OF:  # most of the slice's traffic is after 02:15
            assert sizes["cart_abandon_10m"] > 10 and sizes["busy_last_hour"] > 100


def test_real_data_cart_abandonment_matches_pandas(ws: Any) -> None:
    seg = parse_segment(SEGMENTS[0])
    compute_segments(ws, segments=[seg], as_of=AS_OF)
    df = pd.read_csv(REES, usecols=["event_time", "event_type", "user_id"])
    df["ts"] = pd.to_datetime(df["event_time"].str.replace(" UTC", ""))
    carts = df[df.event_type == "cart"]
    buys = df[df.event_type == "purchase"]
    expected = set()
    for user, t in zip(carts.user_id, carts.ts, strict=True):
        if t + timedelta(minutes=10) > AS_OF or t <= AS_OF - timedelta(hours=3):
            continue
        b = buys[(buys.user_id == user) & (buys.ts > t) & (buys.ts <= t + timedelta(minutes=10))]
        if b.empty:
            expected.add(str(user))
    got = {
        str(v)
        for (v,) in ws.store.rows(
            "SELECT DISTINCT i.id_value FROM memberships m JOIN identities i USING (profile_id)"
            " WHERE m.segment = 'cart_abandon_10m' AND i.id_type = 'user_id'"
        )
    }
    assert got == expected and len(expected) > 10
