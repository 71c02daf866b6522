"""End to end through the Workspace: import events -> compute -> members, explain, history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from segments_support import AS_OF

from microseg.segments import compute_segments, explain, history, parse_segment
from microseg.segments.membership import members
from microseg.workspace import Workspace


def test_import_compute_explain(tmp_path: Path, settings: Any) -> None:
    rows = [
        {
            "event_id": "1",
            "event_type": "add_to_cart",
            "timestamp": "2024-06-28T10:00:00Z",
            "user_id": "alice",
            "product_id": "s1",
            "price": 10,
        },
        {
            "event_id": "2",
            "event_type": "add_to_cart",
            "timestamp": "2024-06-28T10:00:00Z",
            "user_id": "bob",
            "product_id": "s1",
            "price": 10,
        },
        {
            "event_id": "3",
            "event_type": "purchase",
            "timestamp": "2024-06-28T11:00:00Z",
            "user_id": "bob",
            "revenue": 10,
        },
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with Workspace.ephemeral(settings) as ws:
        result = ws.import_events(path)
        assert (result.inserted, result.quarantined) == (3, 0), result.reasons
        seg = parse_segment(
            {
                "name": "abandoned",
                "rule": {"first": "add_to_cart", "not_then": "purchase", "within": "24h"},
            }
        )
        compute_segments(ws, segments=[seg], as_of=AS_OF)
        alice = ws.profile_id("user_id:alice")
        assert members(ws.store, "abandoned") == {alice}
        ex = explain(ws, "abandoned", "user_id:bob", AS_OF)
        assert not ex.member and ex.stored_member is False
        assert ex.tree.value["firsts"] == 1
        assert list(history(ws, "abandoned")["profile_id"]) == [alice]
