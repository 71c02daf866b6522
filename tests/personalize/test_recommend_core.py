"""Recommenders on synthetic shop data with planted structure, imported through a Workspace.

Planted: 4 taste groups (each profile buys mostly the 6 items of its group), 5 popular items
everyone buys, and 3 item pairs (X_k, Y_k) that are always bought in the same order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.errors import ConfigError
from microseg.personalize.recommend import (
    fit_recommender,
    make_recommender,
    recommendations_for,
    strategy_names,
)
from microseg.personalize.recommend_data import EventMapping, load_interactions
from microseg.personalize.recommend_similar import (
    CategoryAffinityRecommender,
    ItemCooccurrenceRecommender,
    SegmentPopularityRecommender,
)
from microseg.personalize.recommenders import PopularityRecommender, top_per_row
from microseg.workspace import Workspace

START = datetime(2024, 1, 1)
CUTOFF = datetime(2024, 4, 15)
AS_OF = datetime(2024, 7, 1)
PROPS = {
    "order_id": "string",
    "product_id": "string",
    "product_name": "string",
    "category": "string",
    "quantity": "number",
    "price": "number",
}
TAXONOMY = {
    "events": {
        "purchase": {"properties": PROPS},
        "product_view": {"properties": PROPS},
        "add_to_cart": {"properties": PROPS},
        "remove_from_cart": {"properties": PROPS},
    }
}
FIELDS = {
    "event_type": "event_type",
    "timestamp": "ts",
    "user_id": "user",
    "session_id": "session",
    **{p: p for p in PROPS},
}
SPEC = {"fields": FIELDS}


def _row(user: str, ts: datetime, item: str, kind: str = "purchase", order: str = "") -> dict:
    cat = "popular" if item.startswith("P") else "gadgets" if item[0] in "XY" else f"cat{item[1]}"
    return {
        "event_type": kind,
        "ts": ts.isoformat(sep=" "),
        "user": user,
        "session": f"s-{user}-{ts:%Y%m%d}",
        "order_id": order,
        "product_id": item,
        "product_name": f"Name of {item}",
        "category": cat,
        "quantity": 1,
        "price": 2.5,
    }


def planted_events(n_users: int = 200, seed: int = 7) -> pd.DataFrame:
    """Purchase lines with the planted groups, popular items and always-together pairs."""
    rng = np.random.default_rng(seed)
    popular = [f"P{j}" for j in range(5)]
    pop_p = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    rows = []
    for u in range(n_users):
        user, group = f"u{u}", u % 4
        items = [f"G{group}_{j}" for j in range(6)]
        days = np.sort(rng.uniform(0, (AS_OF - START).days - 1, size=6))
        for n, day in enumerate(days):
            ts = START + timedelta(days=float(day))
            order = f"o{u}-{n}"
            basket = [popular[rng.choice(5, p=pop_p)], *rng.choice(items, 2, replace=False)]
            if rng.random() < 0.25:
                k = rng.integers(3)
                basket += [f"X{k}", f"Y{k}"]
            rows += [_row(user, ts, item, order=order) for item in basket]
    return pd.DataFrame(rows)


def import_frame(ws: Workspace, df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False)
    result = ws.import_events(path, spec=SourceSpec.model_validate(SPEC))
    assert result.inserted == len(df), result
    ws.resolve_identities()


def make_workspace(tmp: Path, df: pd.DataFrame) -> Workspace:
    ws = Workspace.ephemeral(ProjectSettings.model_validate({"taxonomy": TAXONOMY}))
    import_frame(ws, df, tmp / "events.csv")
    return ws


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("shop"), planted_events())
    yield ws
    ws.close()


def test_cooccurrence_finds_the_planted_pairs(shop: Workspace) -> None:
    data = load_interactions(shop.store, AS_OF)
    for unit in ("profile", "basket"):
        for similarity in ("cosine", "lift"):
            rec = ItemCooccurrenceRecommender(unit=unit, similarity=similarity).fit(data)  # type: ignore[arg-type]
            for k in range(3):
                assert rec.neighbours_of(f"X{k}", 1)["item"].tolist() == [f"Y{k}"], (unit, k)
                assert rec.neighbours_of(f"Y{k}", 1)["item"].tolist() == [f"X{k}"]
    # a profile whose history is only X1 gets Y1 first, explained by X1
    try:
        solo = pd.DataFrame([_row("solo", datetime(2024, 6, 1), "X1", order="os")])
        import_frame(shop, solo, shop.project.root / "solo.csv")
        pid = shop.profile_id("solo")
        recs = fit_recommender(shop.store, "basket_cooccurrence", as_of=AS_OF).recommend([pid], 3)
        assert recs.iloc[0][["rank", "item", "reason"]].tolist() == [
            1,
            "Y1",
            "goes with Name of X1",
        ]
        assert "X1" not in set(recs["item"])  # already bought: excluded
    finally:
        shop.store.execute("DELETE FROM events WHERE user_id = 'solo'")


def test_recommend_shape_unknown_profiles_and_exclude_seen(shop: Workspace) -> None:
    rec = fit_recommender(shop.store, "popularity", as_of=AS_OF)
    pid = shop.profile_id("u0")
    seen = set(
        shop.store.df(
            "SELECT DISTINCT product_id FROM events WHERE user_id = 'u0' AND event_type = 'purchase'"
        )["product_id"]
    )
    out = rec.recommend([pid, "nobody"], 5)
    assert list(out.columns) == ["profile_id", "rank", "item", "score", "reason"]
    mine = out[out["profile_id"] == pid]
    assert mine["rank"].tolist() == [1, 2, 3, 4, 5] and not seen & set(mine["item"])
    assert mine["score"].is_monotonic_decreasing and set(mine["reason"]) == {"popular"}
    # an unknown profile still gets the popular items, top one first
    assert out[out["profile_id"] == "nobody"]["item"].iloc[0] == "P0"
    with_seen = rec.recommend([pid], 5, exclude_seen=False)
    assert with_seen["item"].iloc[0] == "P0"
    with pytest.raises(ConfigError, match="k must be at least 1"):
        rec.recommend([pid], 0)
    with pytest.raises(ConfigError, match="not fitted"):
        PopularityRecommender().recommend([pid], 3)
    with pytest.raises(ConfigError, match="did you mean 'cooccurrence'"):
        make_recommender("coocurrence")


def test_popularity_counts_distinct_buyers(shop: Workspace) -> None:
    rec = fit_recommender(shop.store, "popularity", as_of=AS_OF)
    expected = shop.store.df(
        "SELECT product_id AS item, count(DISTINCT user_id) AS n FROM events"
        " WHERE event_type = 'purchase' GROUP BY 1 ORDER BY n DESC, item LIMIT 3"
    )
    got = rec.recommend(["nobody"], 3)
    assert got["item"].tolist() == expected["item"].tolist()
    assert got["score"].tolist() == expected["n"].astype(float).tolist()


def test_category_affinity_prefers_recent_categories() -> None:
    ev = pd.DataFrame(
        [
            _row("a", datetime(2024, 1, 1), "G1_0"),
            _row("a", datetime(2024, 1, 2), "G1_1"),
            _row("a", datetime(2024, 6, 20), "G2_0"),
            _row("b", datetime(2024, 5, 1), "G1_2"),
            _row("b", datetime(2024, 5, 2), "G1_2"),
            _row("c", datetime(2024, 5, 1), "G2_3"),
        ]
    )
    data = frame_interactions(ev, AS_OF)
    rec = CategoryAffinityRecommender(half_life_days=14, top_categories=1).fit(data)
    out = rec.recommend(["a"], 3)
    # a's recent interest is cat2 (one item 11 days old beats two ~180 days old)
    assert out["item"].tolist() == ["G2_3"] and out["reason"].tolist() == ["you like cat2"]
    wide = CategoryAffinityRecommender(half_life_days=14, top_categories=2).fit(data)
    assert wide.recommend(["a"], 3)["item"].tolist() == ["G2_3", "G1_2"]
    # categories from a catalogue instead of the events
    override = pd.Series({"G1_0": "x", "G1_1": "x", "G1_2": "x", "G2_0": "y", "G2_3": "y"})
    cat = CategoryAffinityRecommender(categories=override, top_categories=1).fit(data)
    assert cat.recommend(["b"], 3)["item"].tolist() == ["G1_0", "G1_1"]


def frame_interactions(ev: pd.DataFrame, as_of: datetime, mapping: EventMapping | None = None):
    """Interactions straight from rows shaped like ``_row`` (profile = user)."""
    from microseg.personalize.recommend_data import Interactions

    df = pd.DataFrame(
        {
            "profile_id": ev["user"],
            "ts": pd.to_datetime(ev["ts"]),
            "event_type": ev["event_type"],
            "session_id": ev["session"],
            "item": ev["product_id"],
            "category": ev["category"],
            "basket": ev["order_id"].replace("", None),
            "name": ev["product_name"],
            "price": ev["price"].astype(float),
        }
    )
    df = df[df["ts"] < pd.Timestamp(as_of)].reset_index(drop=True)
    return Interactions(df, as_of, mapping or EventMapping())


def test_segment_popularity_uses_memberships_and_skips_late_segments(shop: Workspace) -> None:
    data = load_interactions(shop.store, AS_OF)
    members = pd.DataFrame(
        {"segment": "group1", "profile_id": [shop.profile_id(f"u{u}") for u in range(1, 200, 4)]}
    )
    rec = SegmentPopularityRecommender(memberships=members).fit(data)
    out = rec.recommend([members["profile_id"].iloc[0]], 10, exclude_seen=False)
    assert set(out["item"].head(6)) <= {f"G1_{j}" for j in range(6)} | {"P0"}
    assert set(out["reason"]) == {"popular in group1"}
    # stored memberships: a segment computed after the data's as_of is skipped (leakage)
    now = datetime(2030, 1, 1)
    shop.store.execute(
        "INSERT INTO segments (name, definition, checksum, as_of, updated_at) VALUES"
        " ('late', '{}', 'x', ?, ?), ('early', '{}', 'y', ?, ?)",
        [now, now, datetime(2024, 3, 1), now],
    )
    shop.store.execute(
        "INSERT INTO memberships SELECT CASE WHEN g = 1 THEN 'late' ELSE 'early' END, profile_id, ?"
        " FROM (SELECT profile_id, row_number() OVER (ORDER BY profile_id) % 2 AS g"
        " FROM identities)",
        [now],
    )
    try:
        stored = SegmentPopularityRecommender(shop.store).fit(data)
        assert stored.skipped == ["late"] and list(stored.segment_names) == ["early"]
        lax = SegmentPopularityRecommender(shop.store, strict_as_of=False).fit(data)
        assert sorted(lax.segment_names) == ["early", "late"]
    finally:
        shop.store.execute("DELETE FROM memberships")
        shop.store.execute("DELETE FROM segments")


def test_blend_puts_cart_first_and_fills_with_fallbacks() -> None:
    ev = pd.DataFrame(
        [
            _row("a", datetime(2024, 6, 1), "G1_0", order="o1"),
            _row("a", datetime(2024, 6, 29), "G1_5", kind="product_view"),
            _row("a", datetime(2024, 6, 30), "X0", kind="add_to_cart"),
            _row("b", datetime(2024, 5, 1), "G1_0", order="o2"),
            _row("b", datetime(2024, 5, 1), "G1_1", order="o2"),
            _row("e", datetime(2024, 5, 2), "G1_0", order="o5"),
            _row("e", datetime(2024, 5, 2), "G1_1", order="o5"),
            _row("c", datetime(2024, 5, 3), "P0", order="o3"),
            _row("d", datetime(2024, 5, 3), "P0", order="o4"),
        ]
    )
    data = frame_interactions(ev, AS_OF)
    blend = make_recommender("blend").fit(data)
    out = blend.recommend(["a"], 4)
    # cart first; G1_1 (co-bought with G1_0 and in the liked category) and the viewed G1_5
    # next; popularity fills the last slot. Each reason names the component that weighs most.
    assert out["item"].iloc[0] == "X0" and out["item"].iloc[3] == "P0"
    assert dict(zip(out["item"], out["reason"], strict=True)) == {
        "X0": "left in cart",
        "G1_5": "recently viewed",
        "G1_1": "goes with Name of G1_0",
        "P0": "popular",
    }
    assert out["score"].is_monotonic_decreasing
    assert blend.recommend(["a"], 1)["item"].tolist() == ["X0"]
    assert set(strategy_names()) >= {"blend", "cooccurrence", "abandoned_cart", "popularity"}


def test_recently_viewed_orders_by_recency() -> None:
    ev = pd.DataFrame(
        [
            _row("a", datetime(2024, 6, 1), "G1_0", kind="product_view"),
            _row("a", datetime(2024, 6, 29), "G1_1", kind="product_view"),
            _row("a", datetime(2024, 6, 20), "G1_2", kind="product_view"),
            _row("a", datetime(2024, 4, 1), "G1_3", kind="product_view"),  # beyond 30 days
            _row("a", datetime(2024, 6, 30), "G1_2", kind="purchase", order="o"),
        ]
    )
    rec = make_recommender("recently_viewed").fit(frame_interactions(ev, AS_OF))
    assert rec.recommend(["a"], 5)["item"].tolist() == ["G1_1", "G1_0"]  # G1_2 bought
    assert rec.recommend(["a"], 5, exclude_seen=False)["item"].tolist() == ["G1_1", "G1_2", "G1_0"]


def test_buy_again_ranks_by_recent_frequency() -> None:
    ev = pd.DataFrame(
        [
            _row("a", datetime(2024, 1, 5), "G1_0", order="o1"),
            _row("a", datetime(2024, 2, 5), "G1_0", order="o2"),
            _row("a", datetime(2024, 6, 25), "G1_1", order="o3"),
            _row("a", datetime(2023, 6, 25), "G1_2", order="o0"),
        ]
    )
    rec = make_recommender("buy_again").fit(frame_interactions(ev, AS_OF))
    # 60-day half-life: one purchase 6 days ago beats two 5-6 months ago; a year ago is last
    out = rec.recommend(["a"], 5, exclude_seen=False)
    assert out["item"].tolist() == ["G1_1", "G1_0", "G1_2"]
    assert set(out["reason"]) == {"bought before"}
    assert rec.recommend(["a"], 5).empty  # everything is already bought


def test_recommendations_for_gives_template_dicts_and_refits_on_new_data(
    tmp_path: Path,
) -> None:
    ev = planted_events(40)
    with make_workspace(tmp_path, ev) as ws:
        pid = ws.profile_id("u1")
        recs = recommendations_for(ws.store, pid, 3, strategy="cooccurrence", as_of=AS_OF)
        assert [r["rank"] for r in recs] == [1, 2, 3]
        first = recs[0]
        assert set(first) == {"rank", "item", "score", "reason", "name", "category", "price"}
        assert first["name"] == f"Name of {first['item']}" and first["price"] == 2.5
        again = recommendations_for(ws.store, pid, 3, strategy="cooccurrence", as_of=AS_OF)
        assert again == recs
        # a cart add changes the data: the cached model is refitted and the cart item leads
        cart = pd.DataFrame([_row("u1", datetime(2024, 6, 30), "Y2", kind="add_to_cart")])
        cart.to_csv(tmp_path / "cart.csv", index=False)
        ws.import_events(tmp_path / "cart.csv", spec=SourceSpec.model_validate(SPEC))
        blended = recommendations_for(ws.store, pid, 3, as_of=AS_OF)
        assert blended[0]["item"] == "Y2" and blended[0]["reason"] == "left in cart"
        assert recommendations_for(ws.store, "nobody", 2, as_of=AS_OF)[0]["reason"] == "popular"
        # one model per (strategy, as_of, mapping), at most MAX_CACHED_MODELS per store
        from microseg.personalize import recommend as module

        for day in range(12):
            recommendations_for(
                ws.store, pid, 1, strategy="popularity", as_of=AS_OF - timedelta(days=day)
            )
        assert len(module._CACHE[ws.store]) == module.MAX_CACHED_MODELS


def test_top_per_row_keeps_the_largest() -> None:
    from scipy import sparse

    mat = sparse.csr_matrix(np.array([[0.1, 0.5, 0.3, 0.0], [0.0, 0.0, 0.2, 0.0], [4, 1, 3, 2]]))
    kept = top_per_row(mat, 2).toarray()
    assert kept.tolist() == [[0, 0.5, 0.3, 0], [0, 0, 0.2, 0], [4, 0, 3, 0]]


def test_item_column_is_checked_and_names_are_quoted(shop: Workspace) -> None:
    with pytest.raises(ConfigError, match="did you mean 'product_id'"):
        load_interactions(shop.store, AS_OF, EventMapping(item_column="product_ie"))
    # hostile values travel as bound parameters: no SQL error, nothing matches
    odd = EventMapping(purchase_types=("x'); DROP TABLE events; --",), exclude_items="'.*")
    data = load_interactions(shop.store, AS_OF, odd)
    assert not data.events["is_purchase"].any()
    assert shop.store.table_exists("events")
    # exclude_items removes the matching items everywhere
    data = load_interactions(shop.store, AS_OF, EventMapping(exclude_items=r"P\d"))
    assert not data.events["item"].str.startswith("P").any() and len(data.events) > 0


def test_an_empty_store_gives_no_recommendations() -> None:
    with Workspace.ephemeral() as ws:  # no events yet: not even the property columns exist
        for strategy in strategy_names():
            assert fit_recommender(ws.store, strategy).recommend(["x"], 3).empty, strategy
        assert recommendations_for(ws.store, "x", 3) == []
    with Workspace.ephemeral(ProjectSettings.model_validate({"taxonomy": TAXONOMY})) as ws:
        ws.store.execute(
            "INSERT INTO events (event_id, event_type, ts, received_at, id_key)"
            " VALUES ('e1', 'purchase', ?, ?, 'user_id:a')",
            [START, START],
        )
        with pytest.raises(ConfigError, match="no item column 'product_id'"):
            fit_recommender(ws.store, "popularity")


def test_recommendations_render_in_a_content_block(shop: Workspace) -> None:
    from microseg.personalize.content import ProfileContextLoader, parse_content, render_block

    block = parse_content(
        """
blocks:
  picks:
    placeholders: {recommendations: {default: []}}
    fallback: {html: "<p>Our bestsellers</p>"}
    variants:
      - id: web
        channel: web
        html: |
          <ul>{% for r in recommendations %}<li>{{ r.name }} ({{ r.reason }})</li>{% endfor %}</ul>
"""
    ).blocks["picks"]
    pid = shop.profile_id("u2")
    recs = recommendations_for(shop.store, pid, 2, strategy="cooccurrence", as_of=AS_OF)
    ctx = ProfileContextLoader(shop.store, extra={"recommendations": recs}).load(pid, as_of=AS_OF)
    html = render_block(block, ctx).html or ""
    assert html.count("<li>") == 2 and not render_block(block, ctx).fallback_used
    assert f"<li>Name of {recs[0]['item']} ({recs[0]['reason']})</li>" in html
    empty = render_block(block, {"recommendations": []}).html or ""
    assert "<li>" not in empty


def test_small_batches_give_the_same_result(
    shop: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from microseg.personalize import recommenders

    rec = fit_recommender(shop.store, "blend", as_of=AS_OF)
    profiles = [shop.profile_id(f"u{u}") for u in range(30)]
    whole = rec.recommend(profiles, 5)
    monkeypatch.setattr(recommenders, "BATCH_CELLS", 7 * rec._require().n_items)
    pd.testing.assert_frame_equal(rec.recommend(profiles, 5), whole)
