"""RFM on the real UCI Online Retail data, checked against pandas on the raw CSV."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.traits import compute_traits, load_traits, trait_frame
from microseg.workspace import Workspace

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online_retail_uci"
CSV = DATA / "online_retail.csv.gz"
AS_OF = datetime(2011, 12, 10)
SPEC = {
    "fields": {
        "event_type": {"value": "purchase"},
        "timestamp": {"column": "InvoiceDate", "timezone": "Europe/London"},
        "user_id": "CustomerID",
        "anonymous_id": {"column": "InvoiceNo", "prefix": "guest-", "when_missing": "CustomerID"},
        "order_id": "InvoiceNo",
        "product_id": "StockCode",
        "quantity": "Quantity",
        "price": "UnitPrice",
        "country": "Country",
    }
}
TAXONOMY = {
    "events": {
        "purchase": {
            "properties": {
                "order_id": "string",
                "product_id": "string",
                "quantity": "number",
                "price": {"type": "number", "min": 0},
                "country": "string",
            }
        }
    }
}
TRAITS = """
traits:
  - {name: rfm, kind: rfm, events: [purchase], monetary: quantity * price, frequency_of: order_id}
  - {name: uk_lines, kind: count, events: [purchase], where: {country: United Kingdom}}
  - {name: top_country, kind: dominant, property: country}
"""


@pytest.fixture(scope="module")
def retail() -> tuple[pd.DataFrame, pd.DataFrame]:
    if not CSV.exists():
        pytest.skip(f"real dataset not present: {CSV}")
    settings = ProjectSettings.model_validate({"taxonomy": TAXONOMY})
    with Workspace.ephemeral(settings) as ws:
        result = ws.import_events(CSV, spec=SourceSpec.model_validate(SPEC))
        assert result.rows_read == 541_909
        traitset = load_traits(TRAITS, settings.taxonomy)
        compute_traits(ws.store, settings, traitset, AS_OF)
        frame = trait_frame(ws.store)
        keys = ws.store.df(
            "SELECT id_value AS customer, profile_id FROM identities WHERE id_type = 'user_id'"
        )
    got = keys.merge(frame, on="profile_id").set_index("customer").sort_index()
    raw = pd.read_csv(
        CSV,
        dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str},
        keep_default_na=False,
        na_values={"CustomerID": [""]},
    )
    return got, raw


def test_frequency_and_monetary_match_raw_csv(retail):
    got, raw = retail
    rows = raw[raw["CustomerID"].notna() & (raw["UnitPrice"] >= 0)].copy()
    rows["value"] = rows["Quantity"] * rows["UnitPrice"]
    g = rows.groupby("CustomerID")
    want = pd.DataFrame(
        {
            "freq": g["InvoiceNo"].nunique(),
            "money": g["value"].sum(),
            "uk": g["Country"].apply(lambda s: int((s == "United Kingdom").sum())),
        }
    )
    assert len(got) == len(want) == 4372
    got = got.loc[want.index]
    assert (got["rfm_frequency"].to_numpy() == want["freq"].to_numpy()).all()
    np.testing.assert_allclose(got["rfm_monetary"], want["money"], rtol=1e-9, atol=1e-6)
    assert (got["uk_lines"].to_numpy() == want["uk"].to_numpy()).all()
    # a few well-known customers, spelled out
    assert got.loc["12346", "rfm_frequency"] == 2 and got.loc[
        "12346", "rfm_monetary"
    ] == pytest.approx(0)
    assert got.loc["17850", "top_country"] == "United Kingdom"


def test_rfm_scores_and_segments(retail):
    """Scores are quintiles over every profile with a purchase: customers and guest invoices."""
    got, raw = retail
    rows = raw[raw["UnitPrice"] >= 0].copy()
    rows["who"] = rows["CustomerID"].fillna("guest-" + rows["InvoiceNo"])
    local = pd.to_datetime(rows["InvoiceDate"])
    rows["ts"] = local.dt.tz_localize(
        "Europe/London", ambiguous="NaT", nonexistent="NaT"
    ).dt.tz_convert(None)
    g = rows.groupby("who")
    last = g["ts"].max()
    days = np.floor((pd.Timestamp(AS_OF) - last).dt.total_seconds() / 86400).astype(int)
    freq = g["InvoiceNo"].nunique()
    r = np.ceil(5 * days.rank(method="max", pct=True, ascending=False)).astype(int)
    f = np.ceil(5 * freq.rank(method="max", pct=True)).astype(int)
    customers = got.index
    assert (got["rfm_recency_days"].to_numpy() == days[customers].to_numpy()).all()
    assert (got["rfm_r"].to_numpy() == r[customers].to_numpy()).all()
    assert (got["rfm_f"].to_numpy() == f[customers].to_numpy()).all()
    assert set(got["rfm_m"]) == {1, 2, 3, 4, 5}
    champions = got[got["rfm"] == "Champions"]
    assert len(champions) > 200
    assert (champions[["rfm_r", "rfm_f", "rfm_m"]] >= 4).all().all()
    assert got["rfm"].notna().all()
