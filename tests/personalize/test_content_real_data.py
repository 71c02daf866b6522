"""Profile context on real data: UCI Online Retail purchases (December 2010) feed
``last_purchase`` for 120 real customers, rendered through a content block."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from microseg.personalize.content import ProfileContextLoader, parse_content, render_block
from microseg.store import Store

BLOCK = parse_content(
    """\
blocks:
  thanks:
    placeholders: {first_name: there}
    fallback: {text: Thanks for shopping with us.}
    variants:
      - id: e
        channel: email
        subject: "Thanks, {{ first_name }}"
        text: >-
          {% if last_purchase %}You bought {{ last_purchase.product_name }}
          for {{ '%.2f'|format(last_purchase.price) }} GBP.{% else %}Welcome!{% endif %}
"""
).blocks["thanks"]


@pytest.fixture(scope="module")
def retail(data_dir: Path):
    path = data_dir / "online_retail_uci" / "online_retail.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    store = Store(None)
    store.ensure_columns(
        "events", {"product_id": "string", "product_name": "string", "price": "number"}
    )
    store.execute(
        "CREATE TEMP TABLE dec2010 AS SELECT * FROM read_csv(?, header = true, all_varchar = true)"
        " WHERE CustomerID IS NOT NULL AND InvoiceNo NOT LIKE 'C%' AND InvoiceDate < '2011-01-01'"
        " AND Description IS NOT NULL",
        [str(path)],
    )
    store.execute(
        "INSERT INTO events (event_id, event_type, ts, received_at, user_id, id_key, product_id, product_name, price)"
        " SELECT InvoiceNo || '-' || row_number() OVER (), 'purchase', CAST(InvoiceDate AS TIMESTAMP),"
        " CAST(InvoiceDate AS TIMESTAMP), CustomerID, 'user_id:' || CustomerID, StockCode, Description,"
        " CAST(UnitPrice AS DOUBLE) FROM dec2010"
    )
    store.execute(
        "INSERT INTO identities SELECT DISTINCT id_key, 'user_id', user_id, 'p' || user_id, NULL, NULL, 'test', NULL"
        " FROM events"
    )
    yield store
    store.close()


def test_last_purchase_of_real_customers(retail: Store) -> None:
    customers = [
        r[0] for r in retail.rows("SELECT DISTINCT user_id FROM events ORDER BY 1 LIMIT 120")
    ]
    assert len(customers) == 120
    loader = ProfileContextLoader(retail)
    as_of = datetime(2011, 1, 1)
    for cid in customers:
        last_items = {
            (name, price)
            for name, price in retail.rows(
                "SELECT product_name, price FROM events WHERE user_id = ?"
                " AND ts = (SELECT max(ts) FROM events WHERE user_id = ?)",
                [cid, cid],
            )
        }
        ctx = loader.load(f"p{cid}", as_of=as_of)
        out = render_block(BLOCK, ctx, channel="email")
        assert out.ok, out.errors
        assert out.subject == "Thanks, there"
        assert any(out.text == f"You bought {n} for {p:.2f} GBP." for n, p in last_items), out.text
    # before any purchase the conditional branch shows the welcome text
    early = render_block(
        BLOCK, loader.load(f"p{customers[0]}", as_of=datetime(2010, 11, 1)), channel="email"
    )
    assert early.text == "Welcome!"
