"""Fixed data for segment tests: a store with known profiles, events, traits, consents, scores."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import pandas as pd
import pytest

from microseg.config.models import ProjectSettings
from microseg.config.yamlio import parse_text, validate_model
from microseg.store import Store

AS_OF = datetime(2024, 6, 30, 12, 0, 0)
STORES = {"downtown": (40.7128, -74.0060)}


def template_settings() -> ProjectSettings:
    text = (resources.files("microseg.config") / "templates" / "microseg.yaml").read_text()
    return validate_model(ProjectSettings, parse_text(text, "microseg.yaml"))


def ago(**kw: float) -> datetime:
    return AS_OF - timedelta(**kw)


def fixed_events() -> list[dict[str, Any]]:
    """Known events; each profile exercises one family of conditions."""
    ev: list[dict[str, Any]] = []

    def add(pid: str, etype: str, ts: datetime, session: str | None = None, **props: Any) -> None:
        ev.append(
            {
                "profile_id": pid,
                "event_type": etype,
                "ts": ts,
                "session_id": session or f"{pid}-s{ts:%j}",
                **props,
            }
        )

    # p1: frequent mobile shopper: 3 purchases this month, watched product videos
    for d in (3, 10, 20):
        add("p1", "purchase", ago(days=d), revenue=50.0, category="shoes", device="mobile")
    add("p1", "video_played", ago(days=2), video_id="v1", percent_watched=80.0)
    add("p1", "purchase", ago(days=45), revenue=500.0, category="bags")
    # p2: viewed the same product 4 times in one session
    for m in range(4):
        add(
            "p2",
            "product_view",
            ago(hours=5, minutes=m),
            "p2-s1",
            product_id="sku-9",
            category="electronics",
            price=900.0,
        )
    add("p2", "product_view", ago(hours=5), "p2-s1", product_id="sku-1", price=10.0)
    # p3: add_to_cart two days ago, never purchased -> abandoned
    add("p3", "add_to_cart", ago(days=2), product_id="sku-2", price=30.0)
    # p4: add_to_cart then purchase one hour later -> converted
    add("p4", "add_to_cart", ago(days=2), product_id="sku-3", price=30.0)
    add("p4", "purchase", ago(days=2) + timedelta(hours=1), revenue=30.0, category="toys")
    # p5: add_to_cart five minutes ago -> not settled yet for 10m / 24h
    add("p5", "add_to_cart", ago(minutes=5), product_id="sku-4", price=20.0)
    # p5 also abandoned a cart 20 minutes before a checkout that came too late
    add("p5", "add_to_cart", ago(days=1, minutes=30), product_id="sku-5", price=25.0)
    add("p5", "checkout_started", ago(days=1, minutes=5), cart_value=25.0)
    # p6: near the downtown store, visited it this week, browsed shoes
    add("p6", "store_visit", ago(days=3), store_id="downtown", region="New York")
    add("p6", "product_view", ago(days=1), product_id="sku-6", category="shoes", price=120.0)
    # p7: far away, visited the store long ago
    add("p7", "store_visit", ago(days=30), store_id="downtown", region="New York")
    # p8: high-margin browser who rarely buys
    for d in range(6):
        add(
            "p8",
            "product_view",
            ago(days=d + 1),
            product_id=f"lux-{d}",
            category="luxury",
            price=1500.0,
        )
    # p9: engaged with an email resource several times
    for h in (1, 5, 30):
        add("p9", "email_click", ago(hours=h), campaign_id="c1", url="https://x/guide")
    return ev


def fixed_traits() -> list[dict[str, Any]]:
    rows = [
        ("p1", 28, True, "mobile", 150.0, 40.71, -74.00, "10001", ["sport", "tech"], 0.9),
        ("p2", 41, True, "desktop", 900.0, 34.05, -118.24, "90001", ["tech"], 0.5),
        ("p3", 33, False, "mobile", 30.0, None, None, "10002", [], 0.3),
        ("p4", 25, True, "mobile", 30.0, 40.0, -75.0, "19104", ["toys"], 0.4),
        ("p5", 52, False, "tablet", 45.0, None, None, None, None, 0.1),
        ("p6", 30, True, "mobile", 120.0, 40.7150, -74.0080, "10007", ["shoes"], 0.7),
        ("p7", 36, True, "desktop", 200.0, 41.5, -73.0, "06001", ["shoes"], 0.6),
        ("p8", 45, True, "desktop", 10.0, 40.73, -73.99, "10003", ["luxury"], 0.8),
        ("p9", 24, False, "mobile", 0.0, None, None, "E1 6AN", ["reading"], 0.95),
        ("p10", 60, False, None, None, None, None, None, None, None),
    ]
    names = (
        "profile_id",
        "age",
        "urban",
        "dominant_device",
        "monetary",
        "latitude",
        "longitude",
        "postal_code",
        "interest_tags",
        "engagement_score",
    )
    return [dict(zip(names, r, strict=True)) for r in rows]


def fixed_consents() -> list[tuple[str, str, bool, datetime, datetime | None]]:
    return [
        ("p1", "email_marketing", True, ago(days=100), None),
        ("p3", "email_marketing", True, ago(days=10), ago(days=1)),  # expired
        ("p4", "email_marketing", True, ago(days=10), None),
        ("p4", "email_marketing", False, ago(days=5), None),  # withdrawn later
        ("p5", "email_marketing", True, ago(days=10), AS_OF + timedelta(days=30)),
        ("p9", "email_marketing", True, ago(days=1), None),
    ]


def fixed_scores() -> list[tuple[str, str, int, float, datetime]]:
    return [
        ("p1", "churn", 1, 0.9, ago(days=10)),
        ("p1", "churn", 2, 0.2, ago(days=1)),  # latest wins
        ("p2", "churn", 1, 0.8, ago(days=1)),
        ("p3", "churn", 1, 0.1, ago(days=1)),
    ]


def build_store(
    settings: ProjectSettings,
    events: Iterable[Mapping[str, Any]],
    traits: list[dict[str, Any]] | None = None,
    consents: Iterable[tuple[Any, ...]] = (),
    scores: Iterable[tuple[Any, ...]] = (),
    profiles: Iterable[str] = (),
) -> Store:
    """An in-memory store holding exactly the given rows (profile = id_key 'user_id:<pid>')."""
    store = Store(None)
    store.ensure_columns("events", settings.taxonomy.property_columns())
    cols = list(store.columns("events"))
    pids = set(profiles)
    rows = []
    for i, e in enumerate(events):
        pid = str(e["profile_id"])
        pids.add(pid)
        rows.append(
            {
                "event_id": f"e{i}",
                "received_at": e["ts"],
                "id_key": f"user_id:{pid}",
                "user_id": pid,
                "source": "test",
                **{k: v for k, v in e.items() if k != "profile_id"},
            }
        )
    if rows:
        frame = pd.DataFrame(rows)
        unknown = set(frame.columns) - set(cols)
        assert not unknown, unknown
        store.con.register("_new_events", frame)
        store.execute("INSERT INTO events BY NAME SELECT * FROM _new_events")
        store.con.unregister("_new_events")
    for t in traits or []:
        pids.add(str(t["profile_id"]))
    for pid in sorted(pids):
        store.execute("INSERT INTO profiles VALUES (?, ?, ?, NULL)", [pid, AS_OF, AS_OF])
        store.execute(
            "INSERT INTO identities VALUES (?, 'user_id', ?, ?, NULL, NULL, 'test', NULL)",
            [f"user_id:{pid}", pid, pid],
        )
    if traits is not None:
        store.execute(
            "CREATE TABLE traits (profile_id VARCHAR, age BIGINT, urban BOOLEAN,"
            " dominant_device VARCHAR, monetary DOUBLE, latitude DOUBLE, longitude DOUBLE,"
            " postal_code VARCHAR, interest_tags VARCHAR[], engagement_score DOUBLE)"
        )
        for t in traits:
            store.execute(
                "INSERT INTO traits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", list(t.values())
            )
    for c in consents:
        store.execute(
            "INSERT INTO consents VALUES (?, ?, ?, 'test', ?, ?)", [c[0], c[1], c[2], c[3], c[4]]
        )
    for s in scores:
        store.execute("INSERT INTO scores VALUES (?, ?, ?, ?, ?)", list(s))
    return store


@pytest.fixture(scope="module")
def settings() -> ProjectSettings:
    return template_settings()


@pytest.fixture()
def store(settings: ProjectSettings) -> Store:
    s = build_store(settings, fixed_events(), fixed_traits(), fixed_consents(), fixed_scores())
    yield s
    s.close()
