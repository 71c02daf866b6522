"""A small on-disk project with real-looking people spread over every kind of table."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from microseg.activate.channels import FileOutboxChannel, Message
from microseg.activate.dispatch import Dispatcher
from microseg.activate.ledger import SendLedger
from microseg.config.models import PrivacySettings, ProjectSettings, Taxonomy
from microseg.ingest.profiles import import_profiles
from microseg.privacy.consent import record_consent
from microseg.store import Store
from microseg.workspace import Workspace

T0 = datetime(2026, 3, 1, 9, 0)

PEOPLE: list[dict[str, str]] = [
    {
        "user_id": "cust-81723",
        "anonymous_id": "anon-5f1e9a",
        "email": "Maria.Gonzalez@Example.com",
        "phone": "+1 (415) 555-0134",
        "first_name": "Maria",
        "last_name": "Gonzalez",
        "city": "Denver",
    },
    {
        "user_id": "cust-90211",
        "anonymous_id": "anon-77c2d0",
        "email": "jonas.berg@mail.se",
        "phone": "+46 70 123 45 67",
        "first_name": "Jonas",
        "last_name": "Berg",
        "city": "Malmo",
    },
    {
        "user_id": "cust-33410",
        "anonymous_id": "anon-0b9d41",
        "email": "priya.nair@corp.in",
        "phone": "+91 98765 43210",
        "first_name": "Priya",
        "last_name": "Nair",
        "city": "Pune",
    },
    {
        "user_id": "cust-55012",
        "anonymous_id": "anon-e4a3c8",
        "email": "tom.okafor@example.org",
        "phone": "+44 20 7946 0958",
        "first_name": "Tomasz",
        "last_name": "Okafor",
        "city": "Leeds",
    },
]


def settings(**privacy: Any) -> ProjectSettings:
    return ProjectSettings(
        taxonomy=Taxonomy(allow_unknown_events=True),
        privacy=PrivacySettings(**privacy),
    )


def disk_workspace(root: Path, **privacy: Any) -> Workspace:
    """A workspace whose store is a real DuckDB file under ``<root>/.microseg``."""
    ws = Workspace.ephemeral(settings(**privacy))
    ws.store.close()
    ws.project.root = root
    ws.store = Store(root / ".microseg" / "microseg.duckdb")
    return ws


def event_lines(person: dict[str, str], n: int, start: datetime) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        rec: dict[str, Any] = {
            "event_id": f"{person['user_id']}-e{i}",
            "event_type": "purchase" if i % 3 == 2 else "page_view",
            "timestamp": (start + timedelta(hours=i)).isoformat(),
            "anonymous_id": person["anonymous_id"],
            "properties": {"page": f"/p/{i}", "revenue": 10.0 + i},
        }
        if i % 2 == 0:
            rec["user_id"] = person["user_id"]
            rec["email"] = person["email"]
        out.append(rec)
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def populate(ws: Workspace, tmp: Path) -> dict[str, str]:
    """Import events + CRM for PEOPLE and touch every downstream table; returns the
    profile id of each person (by user id)."""
    rows = [r for p in PEOPLE for r in event_lines(p, 6, T0)]
    rows.append({"event_id": "bad-1", "user_id": PEOPLE[0]["user_id"], "timestamp": "nope"})
    ws.import_events(write_jsonl(tmp / "events.jsonl", rows))
    crm = tmp / "crm.csv"
    pd.DataFrame(
        [
            {k: p[k] for k in ("user_id", "email", "phone", "first_name", "last_name", "city")}
            for p in PEOPLE
        ]
    ).to_csv(crm, index=False)
    import_profiles(ws.store, ws.settings, ws.keys, crm, id_column="user_id", source="crm")
    ws.resolve_identities()
    pids = {p["user_id"]: ws.profile_id("user_id:" + p["user_id"]) for p in PEOPLE}
    s = ws.store
    now = T0 + timedelta(days=1)
    s.execute("CREATE TABLE IF NOT EXISTS traits (profile_id VARCHAR PRIMARY KEY, spend DOUBLE)")
    for i, (uid, pid) in enumerate(pids.items()):
        record_consent(s, pid, "email_marketing", True, source="web_form", at=T0)
        s.execute("INSERT INTO traits VALUES (?, ?)", [pid, 100.0 + i])
        s.execute(
            "INSERT INTO memberships (segment, profile_id, entered_at) VALUES ('vip', ?, ?)",
            [pid, now],
        )
        s.execute(
            "INSERT INTO membership_history (segment, profile_id, change, changed_at, reason,"
            " source, recorded_at) VALUES ('vip', ?, 'entered', ?, 'rule', 'batch', ?)",
            [pid, now, now],
        )
        s.execute(
            "INSERT INTO scores (profile_id, model, version, score, scored_at)"
            " VALUES (?, 'churn', 1, 0.3, ?)",
            [pid, now],
        )
        s.execute(
            "INSERT INTO cluster_membership (profile_id, run, cluster, persona, assigned_at)"
            " VALUES (?, 'run1', 2, 'bargain', ?)",
            [pid, now],
        )
        s.execute(
            "INSERT INTO journey_state (profile_id, journey, step, status, entered_at,"
            " updated_at, data) VALUES (?, 'welcome', 's1', 'active', ?, ?, ?)",
            [pid, now, now, json.dumps({"user": uid})],
        )
        s.execute(
            "INSERT INTO experiment_assignments (experiment_key, profile_id, variant, assigned_at)"
            " VALUES ('exp1', ?, 'b', ?)",
            [pid, now],
        )
        s.audit("analyst", "profile.view", pid, {"note": "looked at " + uid})
    # a model whose artifact embeds training rows (the first person's id among them)
    s.execute(
        "INSERT INTO model_registry (model, version, kind, artifact, trained_at) VALUES"
        " ('churn', 1, 'gbm', ?, ?)",
        [("rows:" + ",".join(pids.values())).encode(), now],
    )
    s.execute(
        "INSERT INTO model_registry (model, version, kind, artifact, trained_at) VALUES"
        " ('churn', 2, 'gbm', ?, ?)",
        [b"weights-only", now],
    )
    # sends through the real dispatcher + file outbox
    outbox = FileOutboxChannel(ws.project.root / ".microseg" / "outbox.jsonl")
    dispatcher = Dispatcher(SendLedger(s, keys=ws.keys), {"file": outbox})
    for p in PEOPLE:
        pid = pids[p["user_id"]]
        dispatcher.deliver(
            Message(
                key=f"welcome-{pid}",
                channel="file",
                to=p["email"],
                profile_id=pid,
                purpose="email_marketing",
                subject="Welcome",
                text=f"Hi {p['first_name']}, thanks!",
            )
        )
    # an unimported API spool segment
    spool = ws.project.root / ".microseg" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    write_jsonl(spool / "seg-000001.jsonl", [r for p in PEOPLE for r in event_lines(p, 1, T0)])
    return pids
