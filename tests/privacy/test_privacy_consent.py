"""Consent ledger: history, state at a time, registry, CSV import, and effect on every path."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from privacy_support import PEOPLE, T0, disk_workspace, populate, settings

from microseg.activate.audience import AudienceTooSmallError, export_audience
from microseg.activate.channels import FileOutboxChannel, Message
from microseg.activate.dispatch import Dispatcher
from microseg.activate.ledger import SendLedger
from microseg.errors import ConfigError, ImportFileError
from microseg.privacy.consent import (
    ConsentChange,
    consent_history,
    consent_registry,
    consent_state,
    current_consents,
    record_consent,
)
from microseg.privacy.consent_import import import_consents
from microseg.segments.membership import compute_segments
from microseg.segments.parse import parse_segment
from microseg.store import Store, utcnow
from microseg.workspace import Workspace


def test_history_state_expiry_and_ties() -> None:
    store = Store(None)
    t = datetime(2026, 1, 1)
    assert consent_state(store, "p1", "email").status == "missing"
    record_consent(
        store, "p1", "email", True, source="form", at=t, expires_at=t + timedelta(days=30)
    )
    record_consent(store, "p1", "email", False, source="unsubscribe_link", at=t + timedelta(days=5))
    record_consent(store, "p1", "email", True, source="form", at=t + timedelta(days=10))
    record_consent(store, "p1", "sms", True, source="app", at=t, expires_at=t + timedelta(days=2))
    record_consent(store, "p1", "push", True, source="app", at=t)
    record_consent(store, "p1", "push", False, source="app", at=t)  # same instant: revoke wins

    def status(purpose: str, at: datetime) -> str:
        return consent_state(store, "p1", purpose, at).status

    assert status("email", t - timedelta(days=1)) == "missing"
    assert status("email", t + timedelta(days=1)) == "granted"
    assert status("email", t + timedelta(days=6)) == "revoked"
    assert status("email", t + timedelta(days=11)) == "granted"
    assert status("sms", t + timedelta(days=1)) == "granted"
    assert status("sms", t + timedelta(days=3)) == "expired"
    assert status("push", t + timedelta(days=1)) == "revoked"
    state = consent_state(store, "p1", "email", t + timedelta(days=6))
    assert (state.source, state.recorded_at, state.granted) == (
        "unsubscribe_link",
        t + timedelta(days=5),
        False,
    )
    current = {s.purpose: s.status for s in current_consents(store, "p1", t + timedelta(days=3))}
    assert current == {"email": "granted", "push": "revoked", "sms": "expired"}
    # the history is append-only and complete; the view shows the row in force
    assert len(consent_history(store, ["p1"])) == 6
    assert (
        store.scalar(
            "SELECT granted FROM consent_current WHERE profile_id = 'p1' AND purpose = 'push'"
        )
        is False
    )
    # every change is audited with purpose and source
    audit = store.rows("SELECT action, target, details FROM audit_log ORDER BY logged_at")
    assert [a for a, _, _ in audit].count("consent.revoke") == 2 and len(audit) == 6
    assert json.loads(audit[1][2])["source"] == "unsubscribe_link"


def test_purposes_and_inputs_are_validated() -> None:
    ws = Workspace.ephemeral(settings(purposes=["email_marketing", "analytics"]))
    with pytest.raises(ConfigError, match="did you mean 'email_marketing'"):
        record_consent(ws.store, "p1", "email_marketing2", True, source="x", settings=ws.settings)
    with pytest.raises(ConfigError, match="lower_snake_case"):
        record_consent(ws.store, "p1", "Email Marketing", True, source="x")
    with pytest.raises(ConfigError, match="needs a source"):
        record_consent(ws.store, "p1", "analytics", True, source="")
    with pytest.raises(ConfigError, match="not after"):
        record_consent(
            ws.store, "p1", "analytics", True, source="x", at=T0, expires_at=T0 - timedelta(1)
        )
    assert ws.store.scalar("SELECT count(*) FROM consents") == 0


def test_registry_publishes_changes_and_survives_a_broken_subscriber() -> None:
    store = Store(None)
    seen: list[ConsentChange] = []

    def broken(change: ConsentChange) -> None:
        raise RuntimeError("boom")

    registry = consent_registry(store)
    registry.subscribe(broken)
    unsubscribe = registry.subscribe(seen.append)
    record_consent(store, "p9", "ads", True, source="cmp", actor="api:key1")
    record_consent(store, "p9", "ads", False, source="cmp")
    assert [(c.profile_id, c.granted, c.actor) for c in seen] == [
        ("p9", True, "api:key1"),
        ("p9", False, "library"),
    ]
    unsubscribe()
    record_consent(store, "p9", "ads", True, source="cmp")
    assert len(seen) == 2
    assert consent_registry(Store(None)) is not registry


def test_revoke_blocks_next_send_export_and_segment(tmp_path: Path) -> None:
    ws = disk_workspace(tmp_path / "proj")
    pids = populate(ws, tmp_path)
    pid = pids[PEOPLE[1]["user_id"]]
    store = ws.store
    outbox = FileOutboxChannel(tmp_path / "out.jsonl")
    dispatcher = Dispatcher(SendLedger(store, keys=ws.keys), {"file": outbox})

    def send(key: str) -> str:
        msg = Message(key, "file", PEOPLE[1]["email"], pid, "email_marketing", "Hi")
        return dispatcher.deliver(msg).status

    seg = parse_segment({"name": "emailable", "rule": {"consent": "email_marketing"}})

    def members() -> set[str]:
        compute_segments(store, ws.settings, [seg], utcnow())
        return {
            r[0]
            for r in store.rows("SELECT profile_id FROM memberships WHERE segment = 'emailable'")
        }

    assert send("a1") == "sent" and pid in members()
    export_audience(store, ws.keys, [pid], tmp_path / "aud.csv", k=1, purpose="email_marketing")
    record_consent(store, pid, "email_marketing", False, source="unsubscribe_link")
    assert send("a2") == "skipped"  # the very next send
    with pytest.raises(AudienceTooSmallError, match="1 without 'email_marketing' consent"):
        export_audience(store, ws.keys, [pid], tmp_path / "aud.csv", k=1, purpose="email_marketing")
    assert pid not in members()  # the next batch compute
    others = set(pids.values()) - {pid}
    assert others <= members()


def test_import_consents_csv(tmp_path: Path) -> None:
    ws = disk_workspace(tmp_path / "proj", purposes=["email_marketing", "ads"])
    pids = populate(ws, tmp_path)
    csv = tmp_path / "cmp.csv"
    csv.write_text(
        "ref,purpose,granted,recorded_at,expires_at,source\n"
        f"user_id:{PEOPLE[0]['user_id']},ads,yes,2026-03-02T10:00:00Z,2027-03-02,cmp\n"
        f"email:{PEOPLE[1]['email']},email_marketing,opt_out,2026-03-03 08:00,,\n"
        f"{PEOPLE[2]['anonymous_id']},ads,1,,,\n"
        "user_id:ghost,ads,true,,,\n"
        f"user_id:{PEOPLE[3]['user_id']},adz,true,,,\n"
        f"user_id:{PEOPLE[3]['user_id']},ads,maybe,,,\n"
        f"user_id:{PEOPLE[3]['user_id']},ads,true,notatime,,\n"
    )
    seen: list[ConsentChange] = []
    consent_registry(ws.store).subscribe(seen.append)
    result = import_consents(ws, csv, source="cmp-export", actor="cli")
    assert (result.rows_read, result.imported) == (7, 3)
    assert [line for line, _ in result.rejected] == [5, 6, 7, 8]
    assert "no profile" in result.rejected[0][1] and "did you mean 'ads'" in result.rejected[1][1]
    p0, p1, p2 = (pids[p["user_id"]] for p in PEOPLE[:3])
    at = datetime(2026, 6, 1)
    assert consent_state(ws.store, p0, "ads", at).status == "granted"
    assert consent_state(ws.store, p0, "ads", at).expires_at == datetime(2027, 3, 2)
    assert consent_state(ws.store, p0, "ads", at).recorded_at == datetime(2026, 3, 2, 10)
    assert consent_state(ws.store, p1, "email_marketing", at).status == "revoked"
    assert consent_state(ws.store, p1, "email_marketing", at).source == "cmp-export"
    assert consent_state(ws.store, p2, "ads").status == "granted"
    assert len(seen) == 3
    details = json.loads(
        ws.store.scalar("SELECT details FROM audit_log WHERE action = 'consent.import'")
    )
    assert details["rows"] == 3 and sorted(details["profiles"]) == sorted([p0, p1, p2])
    # the clear email of the file is never stored
    assert not ws.store.scalar(
        "SELECT count(*) FROM consents WHERE source LIKE '%@%' OR profile_id LIKE '%@%'"
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("who,purpose\nx,ads\n")
    with pytest.raises(ImportFileError, match="needs columns"):
        import_consents(ws, bad)
    ws.close()


def test_realtime_subscriber_moves_serving_state_at_once(tmp_path: Path) -> None:
    from microseg.api.realtime import RealtimeBridge
    from microseg.api.serving import ServingState
    from microseg.privacy.consent import realtime_subscriber

    root = tmp_path / "proj"
    Workspace.init(root, "rt").close()
    for path in (root / "segments").glob("*.yaml"):
        if path.name != "email_reachable.yaml":  # the others need computed traits
            path.unlink()
    ws = Workspace.open(root)
    pids = populate(ws, tmp_path)
    pid = pids[PEOPLE[2]["user_id"]]
    bridge = RealtimeBridge.from_workspace(ws)  # the project's segments incl. email_reachable
    assert bridge is not None
    state = ServingState.from_store(ws.store, ws.keys)
    consent_registry(ws.store).subscribe(realtime_subscriber(bridge, state))

    def segments() -> frozenset[str]:
        return state.get(pid).segments

    record_consent(ws.store, pid, "email_marketing", False, source="unsubscribe")
    assert "email_reachable" not in segments()
    record_consent(ws.store, pid, "email_marketing", True, source="form")
    assert "email_reachable" in segments()  # no batch run, no request in between
    record_consent(ws.store, pid, "email_marketing", False, source="unsubscribe")
    assert "email_reachable" not in segments()
    history = ws.store.rows(
        "SELECT change FROM membership_history WHERE profile_id = ? AND segment ="
        " 'email_reachable' ORDER BY recorded_at",
        [pid],
    )
    assert [h[0] for h in history][-2:] == ["entered", "exited"]
    ws.close()
