"""Helpers and fixtures for trait tests (imported by the test modules; no conftest.py so
that `from conftest import ...` in other test folders never resolves to this folder)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from microseg.config.models import ProjectSettings
from microseg.store import Store
from microseg.traits import TraitSet, load_traits

AS_OF = datetime(2024, 3, 1, 12, 0, 0)

TAXONOMY = {
    "events": {
        "page_view": {"properties": {"url": "string", "device": "string", "time_spent": "number"}},
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
                "quantity": "integer",
            }
        },
        "purchase": {
            "properties": {
                "order_id": "string",
                "product_id": "string",
                "category": "string",
                "price": "number",
                "quantity": "integer",
            }
        },
        "email_open": {"properties": {"campaign_id": "string"}},
    }
}
EVENT_COLUMNS = [
    "event_id",
    "event_type",
    "ts",
    "id_key",
    "url",
    "device",
    "time_spent",
    "product_id",
    "category",
    "price",
    "quantity",
    "order_id",
    "campaign_id",
]


def random_events(n: int, n_profiles: int, seed: int = 3) -> pd.DataFrame:
    """Deterministic random events over ~120 days before AS_OF plus some after it."""
    rng = np.random.default_rng(seed)
    types = np.array(["page_view", "product_view", "add_to_cart", "purchase", "email_open"])
    et = types[rng.choice(5, n, p=[0.3, 0.35, 0.12, 0.13, 0.1])]
    offset = rng.integers(-10 * 86400, 120 * 86400, n)  # negative -> after as_of
    ts = pd.Timestamp(AS_OF) - pd.to_timedelta(offset, unit="s")
    # round to the minute so ties on ts happen and tie-breaking is exercised
    ts = ts.floor("min")
    commerce = np.isin(et, ["product_view", "add_to_cart", "purchase"])
    cats = np.array(["running shoes", "running apparel", "phones", "kitchen", "books"])
    df = pd.DataFrame(
        {
            "event_id": [f"e{i:06d}" for i in range(n)],
            "event_type": et,
            "ts": ts,
            "id_key": [f"user_id:u{k}" for k in rng.integers(0, n_profiles, n)],
            "url": np.where(et == "page_view", rng.choice(["/a", "/b", "/c"], n), None),
            "device": np.where(
                np.isin(et, ["page_view", "product_view"]),
                rng.choice(["mobile", "desktop", "tablet"], n),
                None,
            ),
            "time_spent": np.where(
                et == "page_view", rng.integers(1, 300, n).astype(float), np.nan
            ),
            "product_id": np.where(commerce, rng.choice(["p1", "p2", "p3", "p4"], n), None),
            "category": np.where(commerce, rng.choice(cats, n), None),
            "price": np.where(commerce, rng.integers(1, 200, n) / 4, np.nan),
            "quantity": pd.array(
                np.where(np.isin(et, ["add_to_cart", "purchase"]), rng.integers(1, 4, n), 0),
                dtype="Int64",
            ),
            "order_id": np.where(et == "purchase", [f"o{i // 2}" for i in range(n)], None),
            "campaign_id": np.where(et == "email_open", rng.choice(["c1", "c2"], n), None),
        }
    )
    df.loc[~np.isin(et, ["add_to_cart", "purchase"]), "quantity"] = pd.NA
    return df


def fill_store(
    store: Store, settings: ProjectSettings, events: pd.DataFrame, extra_profiles: int = 2
) -> pd.DataFrame:
    """Insert events plus one identity/profile per id key (and a few profiles with no events)."""
    store.ensure_columns("events", settings.taxonomy.property_columns())
    ev = events.copy()
    ev["received_at"] = ev["ts"]
    ev["source"] = "test"
    store.con.register("_ev", ev)
    store.execute("INSERT INTO events BY NAME SELECT * FROM _ev")
    store.con.unregister("_ev")
    keys = sorted(set(events["id_key"])) + [f"user_id:nobody{i}" for i in range(extra_profiles)]
    idents = pd.DataFrame(
        {
            "id_key": keys,
            "id_type": "user_id",
            "id_value": [k.split(":", 1)[1] for k in keys],
            "profile_id": ["p_" + k.split(":", 1)[1] for k in keys],
        }
    )
    store.con.register("_id", idents)
    store.execute(
        "INSERT INTO identities (id_key, id_type, id_value, profile_id)"
        " SELECT id_key, id_type, id_value, profile_id FROM _id"
    )
    store.execute(
        "INSERT INTO profiles SELECT profile_id, TIMESTAMP '2024-01-01',"
        " TIMESTAMP '2024-01-01', NULL FROM _id"
    )
    store.con.unregister("_id")
    return idents


def at(days_before: float) -> datetime:
    return AS_OF - timedelta(days=days_before)


@pytest.fixture
def settings() -> ProjectSettings:
    return ProjectSettings.model_validate({"taxonomy": TAXONOMY})


@pytest.fixture
def traits_from(settings: ProjectSettings) -> Callable[[str], TraitSet]:
    def load(text: str) -> TraitSet:
        return load_traits(text, settings.taxonomy)

    return load


@pytest.fixture
def store() -> Iterator[Store]:
    s = Store(None)
    yield s
    s.close()
