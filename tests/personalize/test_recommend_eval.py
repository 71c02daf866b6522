"""Abandoned-cart edges, the temporal split (no leakage), metrics by hand, the evaluation."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import ndcg_score
from test_recommend_core import (
    AS_OF,
    CUTOFF,
    _row,
    frame_interactions,
    import_frame,
    make_workspace,
    planted_events,
)

from microseg.console import RecordingProgress
from microseg.errors import ConfigError
from microseg.personalize.recommend import fit_recommender
from microseg.personalize.recommend_data import load_interactions
from microseg.personalize.recommend_eval import (
    bootstrap_ci,
    evaluate,
    plot_recall,
    ranking_metrics,
    temporal_split,
)
from microseg.personalize.recommenders import abandoned_items
from microseg.workspace import Workspace

DAY = datetime(2024, 6, 30)


def at(hour: int, minute: int = 0, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


CART_CASES = [
    # u1: a checkout of another item after the add clears the whole cart
    _row("u1", at(10), "X0", "add_to_cart"),
    _row("u1", at(11), "P0", "purchase", "o1"),
    # u2: a checkout before the add does not
    _row("u2", at(9), "P0", "purchase", "o2"),
    _row("u2", at(10), "X0", "add_to_cart"),
    # u3: removed -> cleared; removed then added again -> abandoned
    _row("u3", at(10), "X0", "add_to_cart"),
    _row("u3", at(10, 5), "X0", "remove_from_cart"),
    _row("u3", at(10), "X1", "add_to_cart"),
    _row("u3", at(10, 5), "X1", "remove_from_cart"),
    _row("u3", at(10, 10), "X1", "add_to_cart"),
    # u4: added 10 minutes before as_of (still shopping), and one added two months ago
    _row("u4", at(23, 50), "X0", "add_to_cart"),
    _row("u4", at(10, day=datetime(2024, 5, 1)), "X1", "add_to_cart"),
    # u5: the item itself bought later
    _row("u5", at(10), "X0", "add_to_cart"),
    _row("u5", at(11), "X0", "purchase", "o5"),
    # u6: checkout at the same instant as the add clears it
    _row("u6", at(10), "X0", "add_to_cart"),
    _row("u6", at(10), "P1", "purchase", "o6"),
    # u7: the checkout happens after as_of: as of as_of the cart is abandoned
    _row("u7", at(10), "X0", "add_to_cart"),
    _row("u7", at(1, day=AS_OF), "P1", "purchase", "o7"),
]


def _pairs(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["profile_id"], df["item"], strict=True))


def test_abandoned_cart_edges() -> None:
    data = frame_interactions(pd.DataFrame(CART_CASES), AS_OF)
    assert _pairs(abandoned_items(data)) == {("u2", "X0"), ("u3", "X1"), ("u7", "X0")}
    item_scope = abandoned_items(data, scope="item")
    # per item: only a removal or a purchase of that item clears it (u1 and u6 bought others)
    assert _pairs(item_scope) == _pairs(abandoned_items(data)) | {("u1", "X0"), ("u6", "X0")}
    longer = abandoned_items(data, lookback=timedelta(days=90), min_idle=timedelta(minutes=5))
    assert _pairs(longer) - _pairs(abandoned_items(data)) == {("u4", "X0"), ("u4", "X1")}
    # one day later, u7's checkout (now before as_of) clears the cart
    later = frame_interactions(pd.DataFrame(CART_CASES), AS_OF + timedelta(days=1))
    assert ("u7", "X0") not in _pairs(abandoned_items(later))


def test_abandoned_cart_through_the_store(tmp_path: Path) -> None:
    with make_workspace(tmp_path, pd.DataFrame(CART_CASES)) as ws:
        rec = fit_recommender(ws.store, "abandoned_cart", as_of=AS_OF)
        out = rec.recommend([ws.profile_id(f"u{n}") for n in range(1, 8)], 5)
        by_user = {
            ws.store.scalar("SELECT id_value FROM identities WHERE profile_id = ?", [p]): i
            for p, i in zip(out["profile_id"], out["item"], strict=True)
        }
        assert by_user == {"u2": "X0", "u3": "X1", "u7": "X0"}
        assert set(out["reason"]) == {"left in cart"}


def test_metrics_match_a_hand_computation() -> None:
    recs = pd.DataFrame(
        {
            "profile_id": ["A"] * 5 + ["B", "D"],
            "rank": [1, 2, 3, 4, 5, 1, 1],
            "item": ["a", "b", "c", "d", "e", "x", "b"],
        }
    )
    truth = pd.DataFrame({"profile_id": ["A", "A", "A", "B", "C"], "item": list("bdzxq")})
    m = ranking_metrics(recs, truth, ks=(2, 5)).set_index(["profile_id", "k"])
    assert set(m.index.get_level_values(0)) == {"A", "B", "C"}  # D has no truth: not scored
    l2 = math.log2
    a5 = m.loc[("A", 5)]
    assert a5["hit_rate"] == 1 and a5["recall"] == pytest.approx(2 / 3)
    assert a5["precision"] == pytest.approx(2 / 5)
    assert a5["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert a5["ndcg"] == pytest.approx((1 / l2(3) + 1 / l2(5)) / (1 + 1 / l2(3) + 1 / l2(4)))
    a2 = m.loc[("A", 2)]
    assert (a2["recall"], a2["precision"]) == (pytest.approx(1 / 3), 0.5)
    assert a2["map"] == pytest.approx((1 / 2) / 2)
    assert a2["ndcg"] == pytest.approx((1 / l2(3)) / (1 + 1 / l2(3)))
    b5 = m.loc[("B", 5)]
    assert tuple(b5[["hit_rate", "recall", "precision", "map", "ndcg"]]) == (1, 1, 0.2, 1, 1)
    assert (m.loc[("C", 5)] == 0).all()


def test_ndcg_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(3)
    n_items, rows_r, rows_t, y_true, y_score = 40, [], [], [], []
    for u in range(60):
        ranked = rng.permutation(n_items)[:20]
        bought = rng.choice(n_items, size=int(rng.integers(1, 8)), replace=False)
        rows_r += [(u, r + 1, int(i)) for r, i in enumerate(ranked)]
        rows_t += [(u, int(i)) for i in bought]
        truth_vec, score_vec = np.zeros(n_items), np.zeros(n_items)
        truth_vec[bought] = 1
        score_vec[ranked] = 20 - np.arange(20)
        y_true.append(truth_vec)
        y_score.append(score_vec)
    recs = pd.DataFrame(rows_r, columns=["profile_id", "rank", "item"])
    truth = pd.DataFrame(rows_t, columns=["profile_id", "item"])
    ours = ranking_metrics(recs, truth, ks=(5, 10)).groupby("k")["ndcg"].mean()
    for k in (5, 10):
        assert ours[k] == pytest.approx(ndcg_score(np.array(y_true), np.array(y_score), k=k))


def test_bootstrap_interval_covers_the_mean_with_normal_width() -> None:
    values = np.random.default_rng(1).binomial(1, 0.3, size=2000).astype(float)
    low, high = bootstrap_ci(values, reps=2000, seed=5)
    se = values.std(ddof=1) / math.sqrt(len(values))
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert math.isnan(bootstrap_ci(np.array([]))[0])


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = make_workspace(tmp_path_factory.mktemp("small"), planted_events(120, seed=11))
    yield ws
    ws.close()


def test_temporal_split_has_no_leakage(small_shop: Workspace, tmp_path: Path) -> None:
    split = temporal_split(small_shop.store, CUTOFF)
    assert split.train.events["ts"].max() < pd.Timestamp(CUTOFF)
    later = small_shop.store.df(
        "SELECT DISTINCT i.profile_id, e.product_id AS item FROM events e"
        " JOIN identities i USING (id_key) WHERE e.ts >= ? AND e.event_type = 'purchase'",
        [CUTOFF],
    )
    assert _pairs(split.test) <= _pairs(later)
    before = _pairs(split.train.events[split.train.events["is_purchase"]])
    assert set(split.test[split.test["repeat"]].apply(tuple, axis=1).map(lambda t: t[:2])) <= before
    assert not (_pairs(split.truth("new")) & before)
    profiles = list(pd.unique(split.test["profile_id"]))
    recs = fit_recommender(small_shop.store, "blend", data=split.train).recommend(profiles, 20)
    # a future hit bought by everybody after the cutoff must not reach the train side
    future = pd.DataFrame(
        [_row(f"u{u}", CUTOFF + timedelta(days=3), "FUTURE", order=f"f{u}") for u in range(120)]
        + [_row(f"u{u}", CUTOFF + timedelta(days=2), "FUTURE", "add_to_cart") for u in range(9)]
    )
    import_frame(small_shop, future, tmp_path / "future.csv")
    try:
        split2 = temporal_split(small_shop.store, CUTOFF)
        assert "FUTURE" not in set(split2.train.items)
        assert "FUTURE" in set(split2.truth("new")["item"])
        again = fit_recommender(small_shop.store, "blend", data=split2.train).recommend(
            profiles, 20
        )
        pd.testing.assert_frame_equal(recs, again)
    finally:
        small_shop.store.execute("DELETE FROM events WHERE product_id = 'FUTURE'")


def test_evaluation_ranks_cooccurrence_above_popularity(
    small_shop: Workspace, tmp_path: Path
) -> None:
    progress = RecordingProgress()
    report = evaluate(
        small_shop.store,
        CUTOFF,
        ["cooccurrence", "category_affinity", "blend"],
        ks=(5, 10),
        reps=300,
        progress=progress,
    )
    summary = report.summary.set_index(["mode", "strategy", "k"])
    for mode in ("new", "all"):
        pop = summary.loc[(mode, "popularity", 10), "recall"]
        assert summary.loc[(mode, "cooccurrence", 10), "recall"] > pop + 0.1
        assert summary.loc[(mode, "blend", 10), "recall"] > pop
    ci = report.intervals.set_index(["mode", "strategy"])
    row = ci.loc[("new", "cooccurrence")]
    assert row["ci_low"] < row["value"] < row["ci_high"] and row["diff_ci_low"] > 0
    assert report.sizes["test_profiles_new"] > 80 and report.sizes["items"] == 4 * 6 + 5 + 6
    assert progress.events[0] == ("start", "evaluating recommenders", 4)
    png = plot_recall(report, tmp_path / "recall.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    # a horizon keeps only the first days after the cutoff
    short = temporal_split(small_shop.store, CUTOFF, horizon=timedelta(days=7))
    assert 0 < len(short.test) < len(temporal_split(small_shop.store, CUTOFF).test)


def test_evaluation_errors_are_clear(small_shop: Workspace) -> None:
    with pytest.raises(ConfigError, match="no purchases before the cutoff 2020-01-01"):
        evaluate(small_shop.store, datetime(2020, 1, 1), ["popularity"], reps=10)
    with pytest.raises(ConfigError, match="bought anything after it"):
        evaluate(small_shop.store, datetime(2030, 1, 1), ["popularity"], reps=10)
    with pytest.raises(ConfigError, match="k values must be positive"):
        evaluate(small_shop.store, CUTOFF, ["popularity"], ks=(0,))
    with pytest.raises(ConfigError, match="unknown recommendation strategy"):
        evaluate(small_shop.store, CUTOFF, ["nope"], reps=10)
    assert len(load_interactions(small_shop.store, CUTOFF).events) > 0
