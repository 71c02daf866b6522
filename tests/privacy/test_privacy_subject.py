"""Access export, correction and the PII read audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from privacy_support import PEOPLE, disk_workspace, populate

from microseg.errors import ConfigError, NotFoundError
from microseg.ingest.matching import exact_token
from microseg.personalize.content import read_pii, read_pii_many
from microseg.privacy.audit import audit_entries
from microseg.privacy.subject import correct_subject, export_subject


def test_export_holds_everything_and_is_audited(tmp_path: Path) -> None:
    ws = disk_workspace(tmp_path / "proj")
    pids = populate(ws, tmp_path)
    person = PEOPLE[2]
    pid = pids[person["user_id"]]
    out = export_subject(ws, "email:" + person["email"].upper(), actor="dpo")
    json.dumps(out)  # plain JSON
    assert out["profile_id"] == pid
    assert out["personal_data"] == {
        "email": person["email"],
        "phone": person["phone"],
        "first_name": person["first_name"],
        "last_name": person["last_name"],
    }
    types = {i["id_type"] for i in out["identities"]}
    assert types == {"user_id", "anonymous_id", "email"}
    assert len(out["events"]) == 6 and all(e["id_key"] for e in out["events"])
    assert {a["name"]: a["value"] for a in out["profile_attributes"]} == {"city": person["city"]}
    assert out["traits"][0]["spend"] == 102.0
    assert [m["segment"] for m in out["memberships"]] == ["vip"]
    assert out["membership_history"][0]["change"] == "entered"
    assert out["scores"][0]["model"] == "churn"
    assert out["cluster_membership"][0]["persona"] == "bargain"
    assert out["sends"][0]["status"] == "sent"
    assert out["journey_state"][0]["journey"] == "welcome"
    assert out["experiment_assignments"][0]["variant"] == "b"
    assert out["consents"]["current"][0]["status"] == "granted"
    assert len(out["consents"]["history"]) == 1
    actions = {a["action"] for a in out["audit"]}
    assert {"consent.grant", "profile.view"} <= actions
    # nothing of another person
    text = json.dumps(out)
    for other in (PEOPLE[0], PEOPLE[1], PEOPLE[3]):
        assert other["user_id"] not in text and other["email"] not in text
    # the decryption and the export are in the audit log, attributed to the actor
    reads = audit_entries(ws.store, actor="dpo", action="pii.decrypt")
    assert len(reads) == 1 and reads.iloc[0]["target"] == pid
    assert sorted(json.loads(reads.iloc[0]["details"])["fields"]) == [
        "email",
        "first_name",
        "last_name",
        "phone",
    ]
    assert len(audit_entries(ws.store, action="subject.export", target=pid)) == 1
    with pytest.raises(NotFoundError):
        export_subject(ws, "user_id:nobody")
    ws.close()


def test_bulk_reads_are_one_audit_row_and_about_finds_them(tmp_path: Path) -> None:
    ws = disk_workspace(tmp_path / "proj")
    pids = populate(ws, tmp_path)
    before = len(audit_entries(ws.store, action="pii.decrypt", limit=1000))
    emails = read_pii_many(ws.store, ws.keys, list(pids.values()), "email", actor="exporter")
    assert sorted(emails.values()) == sorted(p["email"] for p in PEOPLE)
    rows = audit_entries(ws.store, action="pii.*", limit=1000)
    assert len(rows) == before + 1
    one = pids[PEOPLE[3]["user_id"]]
    about = audit_entries(ws.store, about=one, action="pii.decrypt")
    assert "exporter" in set(about["actor"])
    assert read_pii(ws.store, ws.keys, one, [], actor="x") == {}  # nothing read, nothing logged
    assert len(audit_entries(ws.store, action="pii.decrypt", limit=1000)) == before + 1
    ws.close()


def test_correct_pii_and_plain_attributes(tmp_path: Path) -> None:
    ws = disk_workspace(tmp_path / "proj")
    pids = populate(ws, tmp_path)
    person = PEOPLE[1]
    pid = pids[person["user_id"]]
    correct_subject(ws, pid, "last_name", "Bergström", actor="support")
    correct_subject(ws, pid, "city", "Lund", actor="support")
    correct_subject(ws, pid, "phone", None, actor="support")
    assert read_pii(ws.store, ws.keys, pid, ["last_name", "phone"]) == {"last_name": "Bergström"}
    assert ws.profile_view(pid)["attributes"]["city"] == "Lund"
    token = ws.store.scalar(
        "SELECT token FROM pii_vault WHERE profile_id = ? AND field = 'last_name'", [pid]
    )
    assert token == exact_token(ws.keys, "last_name", "Bergström")
    changes = audit_entries(ws.store, action="subject.correct", target=pid)
    assert len(changes) == 3
    assert "Bergström" not in "".join(changes["details"]) and "Lund" not in "".join(
        changes["details"]
    )
    with pytest.raises(ConfigError, match="identifier"):
        correct_subject(ws, pid, "user_id", "x")
    with pytest.raises(ConfigError, match="not an attribute"):
        correct_subject(ws, pid, "na me;", "x")
    # the stored value is ciphertext, never the clear correction
    assert not ws.store.scalar("SELECT count(*) FROM profile_attributes WHERE value = 'Bergström'")
    ws.close()


def test_data_keys_are_per_profile_and_bound_to_the_master_key(tmp_path: Path) -> None:
    from microseg.errors import ConfigError as Cfg
    from microseg.privacy.crypto import KeyRing
    from microseg.privacy.keys import ENVELOPE, load_subject_keys

    ws = disk_workspace(tmp_path / "proj")
    pids = populate(ws, tmp_path)
    deks = load_subject_keys(ws.store, ws.keys, pids.values())
    assert len(deks) == 4 and len(set(deks.values())) == 4
    assert all(len(k) == 32 for k in deks.values())  # AES-256
    blobs = [bytes(r[0]) for r in ws.store.rows("SELECT ciphertext FROM pii_vault")]
    assert blobs and all(b[:1] == ENVELOPE for b in blobs)
    # the wrapped keys are useless with another master key: one clear error
    with pytest.raises(Cfg, match="wrong key file"):
        load_subject_keys(ws.store, KeyRing.generate(), pids.values())
    ws.close()
