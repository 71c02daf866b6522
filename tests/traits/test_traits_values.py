# ruff: noqa: F811 - pytest fixtures imported from traits_fixtures are redefined as arguments
"""Trait values: every kind checked against pandas (reference + hand-computed planted truth)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from traits_fixtures import (  # noqa: F401 - pytest fixtures
    AS_OF,
    at,
    fill_store,
    random_events,
    settings,
    store,
    traits_from,
)

from microseg.store import Store
from microseg.traits import compute_traits, compute_traits_for, trait_catalog, trait_frame
from microseg.traits.reference import pandas_traits

ALL_KINDS = """
traits:
  - {name: n_events, kind: count}
  - {name: views_30d, kind: count, events: [product_view], window: {last: 30d}}
  - {name: cheap_views, kind: count, events: [product_view], where: {price: {lt: 20}}}
  - {name: run_views, kind: count, events: [product_view], where: {category: {like: 'running%'}}}
  - {name: not_books, kind: count, events: [purchase], where: {category: {not_in: [books]}}}
  - {name: phones_rx, kind: count, where: {category: {matches: '^ph'}}}
  - {name: jan_purchases, kind: count, events: [purchase],
     window: {between: [2024-01-01T00:00:00, 2024-02-01T00:00:00]}}
  - {name: spend, kind: sum, expression: quantity * price, events: [purchase]}
  - {name: spend_60d, kind: sum, expression: (quantity * price) - 1, events: [purchase], window: {last: 60d}}
  - {name: avg_price, kind: avg, property: price, events: [product_view, purchase]}
  - {name: min_price, kind: min, property: price}
  - {name: max_qty, kind: max, property: quantity, events: [purchase]}
  - {name: n_categories, kind: distinct_count, property: category}
  - {name: first_category, kind: first, property: category, events: [product_view]}
  - {name: last_device, kind: last, property: device}
  - {name: days_since_purchase, kind: recency_days, events: [purchase]}
  - {name: rfm, kind: rfm, events: [purchase], monetary: quantity * price, frequency_of: order_id}
  - {name: rfm_events, kind: rfm, events: [purchase], monetary: price, window: {last: 90d}}
  - {name: device, kind: dominant, property: device}
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
      - {tag: Electronics > Phones, events: [product_view], where: {category: phones}}
      - {tag: Home > Kitchen, where: {category: kitchen}}
      - {tag: Books, events: [purchase], where: {category: books}}
  - {name: tier, kind: attribute, attribute: loyalty_tier}
  - {name: ltv, kind: attribute, attribute: ltv, dtype: number}
"""


def _attributes(store: Store) -> pd.DataFrame:
    store.execute(
        "INSERT INTO profile_attributes VALUES ('p_u1', 'loyalty_tier', 'gold', NULL, 'crm',"
        " TIMESTAMP '2024-01-01'), ('p_u2', 'loyalty_tier', 'silver', NULL, 'crm', TIMESTAMP"
        " '2024-01-01'), ('p_u1', 'ltv', NULL, 123.5, 'crm', TIMESTAMP '2024-01-01'), ('p_u3',"
        " 'ltv', '77', NULL, 'crm', TIMESTAMP '2024-01-01')"
    )
    return store.df("SELECT * FROM profile_attributes")


def _compare(sql: pd.DataFrame, ref: pd.DataFrame) -> None:
    sql = sql.set_index("profile_id").sort_index()
    assert list(sql.index) == list(ref.index)
    assert list(sql.columns) == list(ref.columns)
    for column in ref.columns:
        a, b = sql[column], ref[column]
        if column in ("interests",):
            assert [list(x) for x in a] == [list(x) for x in b], column
        elif pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
            np.testing.assert_allclose(
                a.astype("float64").to_numpy(),
                pd.to_numeric(b).astype("float64").to_numpy(),
                rtol=1e-9,
                atol=1e-9,
                equal_nan=True,
                err_msg=column,
            )
        else:
            left = [
                None if (x is None or (isinstance(x, float) and math.isnan(x))) else x for x in a
            ]
            right = [
                None if (x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))) else x
                for x in b
            ]
            assert left == right, column


@pytest.mark.parametrize("seed", [3, 11])
def test_every_kind_matches_pandas(store, settings, traits_from, seed):
    events = random_events(4000, 150, seed=seed)
    idents = fill_store(store, settings, events)
    attrs = _attributes(store)
    traitset = traits_from(ALL_KINDS)
    result = compute_traits(store, settings, traitset, AS_OF)
    assert result.rows == len(idents)
    ref = pandas_traits(traitset, AS_OF, events, idents, idents["profile_id"], attrs)
    _compare(trait_frame(store), ref)


def test_planted_truth(store, settings, traits_from):
    """A hand-built profile whose values are worked out by hand."""
    rows = [
        # event_id, type, ts, key, category, price, quantity, order, device
        ("a1", "purchase", at(2), "user_id:ann", "running shoes", 50.0, 2, "o1", None),
        ("a2", "purchase", at(2), "user_id:ann", "books", 10.0, 1, "o1", None),
        ("a3", "purchase", at(40), "user_id:ann", "books", 8.0, 3, "o2", None),
        ("a4", "product_view", at(1), "user_id:ann", "running shoes", 50.0, None, None, "mobile"),
        (
            "a5",
            "product_view",
            at(3),
            "user_id:ann",
            "running apparel",
            30.0,
            None,
            None,
            "desktop",
        ),
        ("a6", "page_view", at(0.5), "user_id:ann", None, None, None, None, "mobile"),
        ("a7", "purchase", at(-1), "user_id:ann", "phones", 999.0, 1, "o9", None),  # after as_of
        ("b1", "page_view", at(100), "user_id:bob", None, None, None, None, "tablet"),
    ]
    events = pd.DataFrame(
        rows,
        columns=[
            "event_id",
            "event_type",
            "ts",
            "id_key",
            "category",
            "price",
            "quantity",
            "order_id",
            "device",
        ],
    )
    events["quantity"] = events["quantity"].astype("Int64")
    fill_store(store, settings, events, extra_profiles=0)
    traitset = traits_from("""
traits:
  - {name: orders, kind: distinct_count, property: order_id, events: [purchase]}
  - {name: spend, kind: sum, expression: quantity * price, events: [purchase]}
  - {name: spend_30d, kind: sum, expression: quantity * price, events: [purchase], window: {last: 30d}}
  - {name: days_since_purchase, kind: recency_days, events: [purchase]}
  - {name: last_cat, kind: last, property: category, events: [product_view]}
  - {name: device, kind: dominant, property: device}
  - {name: eng, kind: engagement, weights: {purchase: 10, product_view: 1}, half_life_days: 2,
     labels: {method: thresholds, highly_engaged: 20, moderately_engaged: 1}}
  - name: tags
    kind: interest_tags
    min_count: 2
    rules: [{tag: Sports > Running, where: {category: {like: 'running%'}}},
            {tag: Books, where: {category: books}}]
""")
    compute_traits(store, settings, traitset, AS_OF)
    got = trait_frame(store).set_index("profile_id")
    ann, bob = got.loc["p_ann"], got.loc["p_bob"]
    assert ann["orders"] == 2 and bob["orders"] == 0
    assert ann["spend"] == pytest.approx(50 * 2 + 10 + 8 * 3)
    assert ann["spend_30d"] == pytest.approx(110)
    assert ann["days_since_purchase"] == 2 and pd.isna(bob["days_since_purchase"])
    assert ann["last_cat"] == "running shoes"
    assert ann["device"] == "mobile" and bob["device"] == "tablet"
    expected = 10 * 0.5**1 * 2 + 10 * 0.5**20 + 1 * 0.5**0.5 + 1 * 0.5**1.5
    assert ann["eng"] == pytest.approx(expected)
    assert ann["eng_label"] == "Moderately Engaged" and bob["eng_label"] == "Lurker"
    assert list(ann["tags"]) == ["Sports > Running", "Books"]  # 3 running events, 2 books
    assert list(bob["tags"]) == []


def test_as_of_ignores_later_events(store, settings, traits_from):
    events = random_events(3000, 80, seed=5)
    fill_store(store, settings, events)
    traitset = traits_from(ALL_KINDS)
    early = AS_OF - timedelta(days=20)
    compute_traits(store, settings, traitset, early)
    with_future = trait_frame(store)

    other = Store(None)
    try:
        fill_store(other, settings, events[events["ts"] <= pd.Timestamp(early)])
        # same profiles must exist in both stores for the comparison
        missing = sorted(
            set(events["id_key"]) - set(events[events["ts"] <= pd.Timestamp(early)]["id_key"])
        )
        for key in missing:
            pid = "p_" + key.split(":", 1)[1]
            other.execute(
                "INSERT INTO identities (id_key, id_type, id_value, profile_id) VALUES (?, 'user_id', ?, ?)",
                [key, key.split(":", 1)[1], pid],
            )
            other.execute(
                "INSERT INTO profiles VALUES (?, TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-01', NULL)",
                [pid],
            )
        compute_traits(other, settings, traitset, early)
        without = trait_frame(other)
    finally:
        other.close()
    pd.testing.assert_frame_equal(with_future, without)
    # and the later as_of does see more events
    compute_traits(store, settings, traitset, AS_OF)
    assert trait_frame(store)["n_events"].sum() > with_future["n_events"].sum()


def test_incremental_equals_batch(store, settings, traits_from):
    events = random_events(2500, 60, seed=8)
    fill_store(store, settings, events)
    for text in (
        ALL_KINDS,
        "traits:\n  - {name: n, kind: count}\n  - {name: d, kind: dominant, property: device}\n",
    ):
        traitset = traits_from(text)
        compute_traits(store, settings, traitset, AS_OF)
        batch = trait_frame(store).set_index("profile_id")
        some = ["p_u3", "p_u17", "p_nobody0", "p_missing"]
        rows = compute_traits_for(store, settings, traitset, some, AS_OF)
        assert sorted(r["profile_id"] for r in rows) == ["p_nobody0", "p_u17", "p_u3"]
        for row in rows:
            expected = batch.loc[row["profile_id"]]
            for key, value in row.items():
                if key == "profile_id":
                    continue
                want = expected[key]
                if isinstance(value, list) or isinstance(want, (list, np.ndarray)):
                    assert list(value) == list(want), key
                elif value is None:
                    assert pd.isna(want), key
                else:
                    assert value == pytest.approx(want), key


def test_swap_and_catalog(store, settings, traits_from):
    fill_store(store, settings, random_events(500, 20))
    store.execute(
        "INSERT INTO trait_catalog VALUES ('score_churn', 'model', 'DOUBLE', NULL, NULL, NULL)"
    )
    compute_traits(store, settings, traits_from(ALL_KINDS), AS_OF)
    compute_traits(
        store, settings, traits_from("traits:\n  - {name: only_one, kind: count}\n"), AS_OF
    )
    assert list(trait_frame(store).columns) == ["profile_id", "only_one"]
    catalog = trait_catalog(store)
    assert "score_churn" in set(catalog["name"])  # rows of other kinds are kept
    catalog = catalog[catalog["kind"] != "model"]
    assert catalog[["name", "kind", "dtype"]].values.tolist() == [["only_one", "count", "BIGINT"]]
    assert catalog["as_of"].iloc[0] == pd.Timestamp(AS_OF)
    assert not store.table_exists("_ms_traits_build")
