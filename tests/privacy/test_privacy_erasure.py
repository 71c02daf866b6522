"""Erasure: nothing of the person left in any table, the database file or the project files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from privacy_support import PEOPLE, disk_workspace, event_lines, populate, write_jsonl

from microseg.errors import NotFoundError
from microseg.personalize.content import read_pii
from microseg.privacy.crypto import normalise_email
from microseg.privacy.erasure import erase_subject, on_erasure
from microseg.privacy.keys import decrypt_with
from microseg.privacy.markers import is_erased
from microseg.store import Store

# Tables that must exist and be covered (deny-list: a person column here must be searched).
PERSON_TABLES = {
    "events",
    "identities",
    "identity_edges",
    "profiles",
    "profile_attributes",
    "pii_vault",
    "match_keys",
    "consents",
    "memberships",
    "membership_history",
    "scores",
    "cluster_membership",
    "sends",
    "journey_state",
    "experiment_assignments",
    "subject_keys",
    "traits",
}


def needles(ws: object, person: dict[str, str], pid: str) -> list[str]:
    keys = ws.keys  # type: ignore[attr-defined]
    email = person["email"]
    token = keys.token(normalise_email(email))
    digits = re.sub(r"\D", "", person["phone"])
    return [
        email,
        email.lower(),
        token,
        person["phone"],
        digits,
        keys.token(digits, "phone"),
        person["first_name"],
        person["last_name"],
        person["user_id"],
        person["anonymous_id"],
        pid,
    ]


def cells(store: Store) -> list[tuple[str, str, str]]:
    out = []
    for (table,) in store.rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ):
        for column, dtype in store.columns(table).items():
            if dtype not in {"VARCHAR", "JSON", "BLOB"} and not dtype.endswith("[]"):
                continue
            quoted = '"' + column.replace('"', '""') + '"'
            for (value,) in store.rows(
                f'SELECT {quoted} FROM "{table}" WHERE {quoted} IS NOT NULL'
            ):
                text = (
                    bytes(value).decode("latin-1")
                    if isinstance(value, (bytes, bytearray, memoryview))
                    else str(value)
                )
                out.append((table, column, text))
    return out


def test_erase_leaves_no_trace_and_keeps_others(tmp_path: Path) -> None:
    ws = disk_workspace(tmp_path / "proj")
    pids = populate(ws, tmp_path)
    victim, others = PEOPLE[0], PEOPLE[1:]
    vpid = pids[victim["user_id"]]
    store = ws.store
    tables = {r[0] for r in store.rows("SELECT table_name FROM information_schema.tables")}
    assert tables >= PERSON_TABLES
    # the victim is everywhere before the erasure (the scan below would see them)
    before = [
        c for c in cells(store) if any(n.lower() in c[2].lower() for n in needles(ws, victim, vpid))
    ]
    assert {t for t, _, _ in before} >= {
        "events",
        "identities",
        "sends",
        "quarantine",
        "model_registry",
    }
    stolen = store.rows("SELECT field, ciphertext FROM pii_vault WHERE profile_id = ?", [vpid])
    dek_before = read_pii(store, ws.keys, vpid, ["email"])
    assert dek_before == {"email": victim["email"]}
    counts_before = {
        uid: {
            t: store.scalar(f'SELECT count(*) FROM "{t}" WHERE profile_id = ?', [pid])
            for t in ("sends", "scores", "traits", "pii_vault", "consents")
        }
        for uid, pid in pids.items()
    }

    report = erase_subject(ws, "user_id:" + victim["user_id"], "GDPR art. 17 request 2026-114")
    assert report.keys_shredded == 1 and report.compacted
    assert report.rows_deleted["events"] == 6 and report.rows_deleted["model_registry"] == 1
    assert report.files_rewritten == {
        ".microseg/outbox.jsonl": 1,
        ".microseg/spool/seg-000001.jsonl": 1,
    }
    store = ws.store  # compaction reopened the connection
    # the erased events' ids left the event-id index: it holds exactly the stored ones
    stored = store.rows("SELECT DISTINCT CAST(md5_number(event_id) >> 65 AS BIGINT) FROM events")
    held = store.event_ids.con.execute("SELECT h FROM seen").fetchall()
    assert sorted(h for (h,) in held) == sorted(h for (h,) in stored)
    # 1. every text / JSON / BLOB cell of every table
    hits = [c for c in cells(store) for n in needles(ws, victim, vpid) if n.lower() in c[2].lower()]
    assert hits == []
    # 2. the raw database file, after a checkpoint
    store.execute("CHECKPOINT")
    raw = Path(store.path).read_bytes().lower()  # type: ignore[arg-type]
    for n in needles(ws, victim, vpid):
        assert n.lower().encode() not in raw, n
        assert n.lower().encode("utf-16-le") not in raw, n
    # 3. every file in the project folder
    for path in (tmp_path / "proj").rglob("*"):
        if path.is_file() and "microseg.duckdb" not in path.name:
            data = path.read_bytes().lower()
            for n in needles(ws, victim, vpid):
                assert n.lower().encode() not in data, (path, n)
    # crypto-shredding: a stolen copy of the ciphertext no longer decrypts with any key we hold
    for fieldname, blob in stolen:
        with pytest.raises(Exception):  # noqa: B017 - InvalidTag from AES-GCM
            decrypt_with(ws.keys, None, bytes(blob), f"{vpid}|{fieldname}")
    with pytest.raises(NotFoundError):
        ws.profile_id("user_id:" + victim["user_id"])
    # others intact: same row counts, PII still decrypts, the other model version stays
    for p in others:
        pid = pids[p["user_id"]]
        assert ws.profile_id("user_id:" + p["user_id"]) == pid
        assert read_pii(store, ws.keys, pid, ["email", "last_name"]) == {
            "email": p["email"],
            "last_name": p["last_name"],
        }
        for t, n in counts_before[p["user_id"]].items():
            assert store.scalar(f'SELECT count(*) FROM "{t}" WHERE profile_id = ?', [pid]) == n, t
        assert ws.events("user_id:" + p["user_id"]).shape[0] == 6
    assert store.scalar("SELECT count(*) FROM model_registry") == 1
    outbox = (tmp_path / "proj" / ".microseg" / "outbox.jsonl").read_text().splitlines()
    assert len(outbox) == 3
    # the erasure itself is audited without the person's ids; other people's entries stay
    row = store.rows("SELECT target, details FROM audit_log WHERE action = 'subject.erase'")
    assert len(row) == 1 and row[0][0] == "erasure:" + report.erasure_id
    assert json.loads(row[0][1])["reason"] == "GDPR art. 17 request 2026-114"
    viewed = store.scalar("SELECT count(*) FROM audit_log WHERE action = 'profile.view'")
    assert viewed == 4  # the victim's view row is kept, its target scrubbed
    # the re-import guard: their events go to quarantine, no profile comes back
    again = write_jsonl(tmp_path / "again.jsonl", event_lines(victim, 4, datetime_after()))
    result = ws.import_events(again)
    assert result.inserted == 0 and result.reasons == {"erased_subject": 4}
    assert is_erased(store, ws.keys, ["user_id:" + victim["user_id"], "user_id:nobody"]) == {
        "user_id:" + victim["user_id"]
    }
    with pytest.raises(NotFoundError):
        ws.profile_id("user_id:" + victim["user_id"])
    for _, _, text in cells(store):
        for n in needles(ws, victim, vpid):
            assert n.lower() not in text.lower(), n
    # ... while another person's new events still import
    new = [
        {**r, "event_id": r["event_id"] + "-new"}
        for r in event_lines(others[0], 2, datetime_after())
    ]
    fresh = write_jsonl(tmp_path / "other.jsonl", new)
    assert ws.import_events(fresh).inserted == 2
    ws.close()


def datetime_after():
    from datetime import timedelta

    from privacy_support import T0

    return T0 + timedelta(days=30)


def test_erase_in_memory_store_and_unknown_subject(tmp_path: Path) -> None:
    from privacy_support import settings

    from microseg.workspace import Workspace

    ws = Workspace.ephemeral(settings())
    heard: list[tuple[str, ...]] = []
    on_erasure(ws.store, heard.append)
    ws.import_events(write_jsonl(tmp_path / "e.jsonl", event_lines(PEOPLE[1], 3, datetime_after())))
    # unresolved: the anonymous-only events made a second profile, linked by an edge
    anon_pid = ws.profile_id("anonymous_id:" + PEOPLE[1]["anonymous_id"])
    report = erase_subject(ws, PEOPLE[1]["user_id"], "request")
    # 3: the anonymous-only event goes too, its event id embeds the user id (cust-90211-e1)
    assert not report.compacted and report.rows_deleted["events"] == 3
    assert report.linked_profiles_kept == [anon_pid]
    assert ws.store.scalar("SELECT count(*) FROM identities") == 1
    assert len(heard) == 1 and anon_pid not in heard[0]
    report = erase_subject(ws, anon_pid, "request", include_linked=True)
    assert report.rows_deleted["identities"] == 1 and report.linked_profiles_kept == []
    assert ws.store.scalar("SELECT count(*) FROM identities") == 0
    with pytest.raises(NotFoundError, match="no data subject"):
        erase_subject(ws, "user_id:ghost", "request")


def test_erase_keeps_people_who_share_a_name_or_a_phone(tmp_path: Path) -> None:
    import pandas as pd
    from privacy_support import settings

    from microseg.ingest.profiles import import_profiles
    from microseg.workspace import Workspace

    ws = Workspace.ephemeral(settings())
    crm = tmp_path / "crm.csv"
    pd.DataFrame(
        [
            {
                "user_id": "u-1",
                "email": "a1@x.org",
                "phone": "+1 415 555 0100",
                "first_name": "Ana",
            },
            {
                "user_id": "u-2",
                "email": "a2@x.org",
                "phone": "+1 415 555 0100",
                "first_name": "Ana",
            },
        ]
    ).to_csv(crm, index=False)
    import_profiles(ws.store, ws.settings, ws.keys, crm, id_column="user_id", source="crm")
    other = ws.profile_id("user_id:u-2")
    report = erase_subject(ws, "user_id:u-1", "request")
    assert report.rows_deleted["pii_vault"] == 3 and report.rows_deleted["match_keys"] >= 1
    assert read_pii(ws.store, ws.keys, other, ["email", "phone", "first_name"]) == {
        "email": "a2@x.org",
        "phone": "+1 415 555 0100",
        "first_name": "Ana",
    }
    kept = ws.store.scalar("SELECT count(*) FROM match_keys WHERE profile_id = ?", [other])
    assert kept == report.rows_deleted["match_keys"]


# Columns that look personal but are handled another way (the row goes by its profile_id, or
# the column holds no person data). A new table with e.g. a `customer_email` column fails
# this test until the erasure knows how to find the person in it.
HANDLED_ELSEWHERE = {
    ("match_keys", "token"),
    ("pii_vault", "token"),
    ("pii_vault", "ciphertext"),
    ("sends", "recipient_token"),
    ("cluster_membership", "persona"),
}
PERSONAL = re.compile(
    r"profile|user|email|phone|person|recipient|subject|customer|id_key|token|anonymous|device"
    r"|ip_addr|address|first_name|last_name|birth"
)


def test_deny_list_every_personal_column_is_covered_by_erasure() -> None:
    from microseg.privacy.subject import KEY_COLUMNS, PROFILE_COLUMNS, VALUE_COLUMNS

    store = Store(None)
    known = PROFILE_COLUMNS | KEY_COLUMNS | VALUE_COLUMNS
    unhandled = []
    for table, column in store.rows(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE' AND c.table_schema = 'main'"
    ):
        if table == "erasure_markers" or not PERSONAL.search(column):
            continue
        if column not in known and (table, column) not in HANDLED_ELSEWHERE:
            unhandled.append(f"{table}.{column}")
    assert unhandled == [], "erasure does not know how to find a person in these columns"
