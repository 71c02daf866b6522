"""End-to-end import of the real datasets in /work/shared/data (skipped when absent)."""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files
from pathlib import Path

import pandas as pd
import pytest
import yaml

from microseg.config.models import ProjectSettings
from microseg.config.sources import SourceSpec
from microseg.workspace import Workspace

DATA = Path("/work/shared/data")
RETAIL = DATA / "online_retail_uci" / "online_retail.csv.gz"
REES = DATA / "rees46_multicategory_oct2019_head" / "2019-Oct_head.csv.gz"

# Each line is one purchase line; rows without CustomerID get the invoice as anonymous id.
RETAIL_SPEC = {
    "fields": {
        "event_type": {"value": "purchase"},
        "timestamp": "InvoiceDate",
        "user_id": "CustomerID",
        "anonymous_id": {"column": "InvoiceNo", "prefix": "invoice:", "when_missing": "CustomerID"},
        "order_id": "InvoiceNo",
        "product_id": "StockCode",
        "quantity": "Quantity",
        "price": "UnitPrice",
        "country": "Country",
    }
}
REES_SPEC = {
    "fields": {"timestamp": "event_time", "session_id": "user_session", "category": "category_code"}
}


def template_settings() -> ProjectSettings:
    """Default taxonomy: purchase.price is a currency (number, min 0)."""
    raw = yaml.safe_load(files("microseg.config.templates").joinpath("microseg.yaml").read_text())
    return ProjectSettings.model_validate(raw)


def need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"dataset {path} not available")


def test_online_retail_totals() -> None:
    need(RETAIL)
    with Workspace.ephemeral(template_settings()) as ws:
        r = ws.import_events(
            RETAIL, spec=SourceSpec.model_validate(RETAIL_SPEC), source="online_retail"
        )
        assert r.rows_read == 541_909
        assert r.rows_read == r.inserted + r.duplicates + r.quarantined
        assert r.quarantined == 2 and r.reasons == {"below_minimum": 2}
        assert r.duplicates == 0 and r.inserted == 541_907
        q = ws.quarantine()
        assert q["detail"].str.contains("-11062.06").all()
        st = ws.store
        assert st.scalar("SELECT count(DISTINCT user_id) FROM events") == 4_372
        assert st.scalar("SELECT count(*) FROM events WHERE user_id IS NOT NULL") == 406_829
        invoices = st.scalar(
            "SELECT count(DISTINCT o) FROM (SELECT order_id AS o FROM events UNION ALL"
            " SELECT json_extract_string(record, '$.order_id') FROM quarantine)"
        )
        assert invoices == 25_900
        assert st.scalar("SELECT min(ts) FROM events") == datetime(2010, 12, 1, 8, 26)
        assert st.scalar("SELECT max(ts) FROM events") == datetime(2011, 12, 9, 12, 50)
        # the bad-debt adjustments are the two rows with a negative price
        raw = pd.read_csv(RETAIL, dtype=str, keep_default_na=False)
        neg = raw[raw["UnitPrice"].astype(float) < 0]
        assert len(neg) == 2 and set(neg["Description"]) == {"Adjust bad debt"}
        assert sorted(q["row_number"].astype(int)) == sorted(int(i) + 1 for i in neg.index)


def test_rees46_slice() -> None:
    need(REES)
    with Workspace.ephemeral(template_settings()) as ws:
        r = ws.import_events(REES, spec=SourceSpec.model_validate(REES_SPEC), source="rees46")
        assert (r.rows_read, r.inserted, r.quarantined, r.duplicates) == (17_434, 17_434, 0, 0)
        st = ws.store
        assert dict(st.rows("SELECT event_type, count(*) FROM events GROUP BY 1")) == {
            "product_view": 17_055,
            "add_to_cart": 165,
            "purchase": 214,
        }
        assert st.scalar("SELECT count(DISTINCT user_id) FROM events") == 4_504
        assert st.scalar("SELECT count(DISTINCT session_id) FROM events") == 5_066
        assert st.scalar("SELECT count(*) FROM events WHERE session_id LIKE 'ms-%'") == 0
        assert st.scalar("SELECT min(ts) FROM events") == datetime(2019, 10, 1, 0, 0)
        assert ws.counts()["profiles"] == 4_504
        # ' UTC' suffix read as an offset; prices typed
        assert (
            st.scalar("SELECT round(sum(price), 2) FROM events WHERE event_type = 'purchase'") > 0
        )
