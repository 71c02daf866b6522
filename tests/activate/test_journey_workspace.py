"""Through the Workspace: events arrive by batch import (the same ``events`` table the API
collector commits to) and resolve a waiting journey; the project engine wires it all."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

from journey_support import Recorder

from microseg.activate.journey_project import install_examples, project_engine
from microseg.workspace import Workspace

T0 = datetime(2026, 3, 2, 10, 0)


def _events(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def test_batch_imported_events_trigger_and_resolve_waits(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    with Workspace.init(root, "shop") as ws:
        install_examples(root)
        crm = tmp_path / "crm.csv"
        with crm.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["customer_id", "email", "first_name"])
            w.writerows([["ann", "ann@x.test", "Ann"], ["bob", "bob@x.test", "Bob"]])
        ws.import_profiles(crm, id_column="customer_id", now=T0)
        for cid in ("ann", "bob"):
            pid = ws.profile_id(f"user_id:{cid}")
            ws.store.execute(
                "INSERT INTO consents VALUES (?, 'email_marketing', TRUE, 'crm', ?, NULL)",
                [pid, T0],
            )
        carts = [
            {"event_id": f"c-{u}", "event_type": "add_to_cart", "timestamp": "2026-03-02T10:00:00Z",
             "user_id": u, "product_id": f"SKU-{u}", "price": 12.5, "category": "shoes"}
            for u in ("ann", "bob")
        ]  # fmt: skip
        result = ws.import_events(_events(tmp_path / "carts.jsonl", carts))
        assert result.inserted == 2, result.reasons
        rec = Recorder()
        engine = project_engine(ws, names=["cart_abandonment"], channels={"email": rec})
        assert engine.run(datetime(2026, 3, 2, 10, 15)).enrolled == {"cart_abandonment": 2}
        checkout = [
            {"event_id": "o-bob", "event_type": "purchase", "timestamp": "2026-03-02T18:00:00Z",
             "user_id": "bob", "order_id": "o1", "product_id": "SKU-bob", "revenue": 12.5}
        ]  # fmt: skip
        ws.import_events(_events(tmp_path / "orders.jsonl", checkout))
        engine.run(datetime(2026, 3, 2, 18, 5))
        engine.run(datetime(2026, 3, 3, 10, 30))
        assert [m.to for m in rec.sent] == ["ann@x.test"]
        assert "SKU-ann (shoes) at 12.5" in (rec.sent[0].text or "")
        status = engine.status("cart_abandonment").set_index("status")["profiles"].to_dict()
        assert status == {"completed": 1, "goal": 1}
