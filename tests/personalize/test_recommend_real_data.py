"""Recommendations on the real UCI Online Retail data, temporal split at 2011-09-01."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.personalize.recommend_data import ONLINE_RETAIL
from microseg.personalize.recommend_eval import evaluate, temporal_split
from microseg.workspace import Workspace

CUTOFF = datetime(2011, 9, 1)  # UTC; the data ends 2011-12-09
SPEC = {
    "fields": {
        "event_type": {"value": "purchase"},
        "timestamp": {"column": "InvoiceDate", "timezone": "Europe/London"},
        "user_id": "CustomerID",
        "anonymous_id": {"column": "InvoiceNo", "prefix": "guest-", "when_missing": "CustomerID"},
        "order_id": "InvoiceNo",
        "product_id": "StockCode",
        "product_name": "Description",
        "quantity": "Quantity",
        "price": "UnitPrice",
    }
}
PROPS = {
    "order_id": "string",
    "product_id": "string",
    "product_name": "string",
    "quantity": "number",
    "price": {"type": "number", "min": 0},
}


@pytest.fixture(scope="module")
def retail(data_dir: Path) -> Iterator[tuple[Workspace, Path]]:
    csv = data_dir / "online_retail_uci" / "online_retail.csv.gz"
    if not csv.exists():
        pytest.skip(f"real dataset not present: {csv}")
    taxonomy = {"events": {"purchase": {"properties": PROPS}}}
    with Workspace.ephemeral(ProjectSettings.model_validate({"taxonomy": taxonomy})) as ws:
        ws.import_events(csv, spec=SourceSpec.model_validate(SPEC))
        ws.resolve_identities()
        yield ws, csv


def _reference_popularity(csv: Path) -> pd.Series:
    """Distinct buyers per StockCode before the cutoff, straight from the CSV with pandas."""
    df = pd.read_csv(csv, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str})
    ts = pd.to_datetime(df["InvoiceDate"]).dt.tz_localize("Europe/London").dt.tz_convert("UTC")
    df = df[(ts < pd.Timestamp(CUTOFF, tz="UTC")) & (df["Quantity"] > 0) & (df["UnitPrice"] >= 0)]
    df = df[~df["StockCode"].str.fullmatch(ONLINE_RETAIL.exclude_items or "")]
    buyer = df["CustomerID"].fillna("guest-" + df["InvoiceNo"])
    return buyer.groupby(df["StockCode"]).nunique().sort_values(ascending=False)


def test_cooccurrence_beats_popularity_on_online_retail(retail: tuple[Workspace, Path]) -> None:
    ws, csv = retail
    split = temporal_split(ws.store, CUTOFF, ONLINE_RETAIL)
    assert split.train.events["ts"].max() < pd.Timestamp(CUTOFF)
    report = evaluate(
        ws.store, CUTOFF, ["cooccurrence"], ks=(10,), mapping=ONLINE_RETAIL, reps=300, split=split
    )
    s = report.summary.set_index(["mode", "strategy", "k"])["recall"]
    ci = report.intervals.set_index(["mode", "strategy"])
    for mode in ("new", "all"):
        assert s[(mode, "cooccurrence", 10)] > s[(mode, "popularity", 10)], mode
        assert ci.loc[(mode, "cooccurrence"), "diff_ci_low"] > 0, mode
    # ~1,900 returning customers bought something after the cutoff (4,372 customers in all)
    assert 1_500 < report.sizes["test_profiles_new"] <= report.sizes["test_profiles_all"] < 4_372
    # the popularity baseline equals distinct buyers counted by pandas on the raw file
    reference = _reference_popularity(csv)
    from microseg.personalize.recommenders import PopularityRecommender

    top = PopularityRecommender().fit(split.train).recommend(["nobody"], 5)
    assert top["score"].tolist() == reference.head(5).astype(float).tolist()
    assert set(top["item"]) == set(reference.head(5).index)


REES_SPEC = {
    "fields": {
        "event_type": {
            "column": "event_type",
            "values": {"view": "product_view", "cart": "add_to_cart"},
        },
        "timestamp": "event_time",
        "user_id": "user_id",
        "session_id": "user_session",
        "product_id": "product_id",
        "category": "category_code",
        "price": "price",
    }
}
REES_PROPS = {"product_id": "string", "category": "string", "price": "number"}


def test_rees46_views_carts_and_evaluation(data_dir: Path) -> None:
    from microseg.personalize.recommend_data import REES46, load_interactions
    from microseg.personalize.recommenders import abandoned_items

    csv = data_dir / "rees46_multicategory_oct2019_head" / "2019-Oct_head.csv.gz"
    if not csv.exists():
        pytest.skip(f"real dataset not present: {csv}")
    events = {t: {"properties": REES_PROPS} for t in ("product_view", "add_to_cart", "purchase")}
    settings = ProjectSettings.model_validate({"taxonomy": {"events": events}})
    with Workspace.ephemeral(settings) as ws:
        assert ws.import_events(csv, spec=SourceSpec.model_validate(REES_SPEC)).inserted == 17_434
        ws.resolve_identities()
        as_of = datetime(2019, 10, 1, 3, 0)
        ours = abandoned_items(load_interactions(ws.store, as_of, REES46))
        # reference with pandas on the raw file: latest add per (user, product) at least 30
        # minutes before as_of, and no purchase by that user at or after it
        raw = pd.read_csv(csv, dtype={"user_id": str, "product_id": str})
        raw["ts"] = pd.to_datetime(raw["event_time"].str.replace(" UTC", ""))
        adds = raw[raw["event_type"] == "cart"].groupby(["user_id", "product_id"])["ts"].max()
        adds = adds[adds <= pd.Timestamp(as_of) - pd.Timedelta(minutes=30)].reset_index()
        last_buy = raw[raw["event_type"] == "purchase"].groupby("user_id")["ts"].max()
        adds["bought"] = adds["user_id"].map(last_buy)
        reference = adds[~(adds["bought"] >= adds["ts"])]
        users = ws.store.df("SELECT profile_id, id_value FROM identities")
        ours = ours.merge(users, on="profile_id")
        assert 0 < len(ours) < 165  # 165 cart events in the file
        assert set(zip(ours["id_value"], ours["item"], strict=True)) == set(
            zip(reference["user_id"], reference["product_id"], strict=True)
        )
        # almost all traffic is 02:10-02:50: cut at 02:35; test = purchases after it
        report = evaluate(
            ws.store,
            datetime(2019, 10, 1, 2, 35),
            ["recently_viewed", "blend"],
            ks=(10,),
            mapping=REES46,
            warm="any",
            reps=200,
        )
        s = report.summary.set_index(["mode", "strategy", "k"])["recall"]
        assert s[("new", "recently_viewed", 10)] > s[("new", "popularity", 10)] + 0.3
        assert s[("new", "blend", 10)] > s[("new", "popularity", 10)] + 0.3
        assert 20 < report.sizes["test_profiles_new"] < 193
