"""CRM / enrichment / survey profile import: real demographics, PII handling, identity links."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from microseg.config.models import ProjectSettings, Taxonomy
from microseg.errors import ConfigError, ImportFileError
from microseg.ingest.identity import resolve
from microseg.ingest.matching import pii_context
from microseg.ingest.profiles import import_profiles
from microseg.privacy.keys import decrypt_with, load_subject_keys
from microseg.store import Store
from microseg.workspace import Workspace


def ws_with(**kwargs: Any) -> Workspace:
    settings = ProjectSettings(taxonomy=Taxonomy(allow_unknown_events=True, **kwargs))
    return Workspace.ephemeral(settings)


def crm(ws: Workspace, path: Path, **kwargs: Any) -> Any:
    return import_profiles(ws.store, ws.settings, ws.keys, path, **kwargs)


def test_complete_journey_demographics(data_dir: Path) -> None:
    path = data_dir / "complete_journey_8451" / "demographics.csv.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    ref = pd.read_csv(path, dtype=str)
    assert len(ref) == 801
    ws = ws_with()
    r = crm(ws, path, id_column="household_id", source="crm")
    assert (r.rows_read, r.imported, r.profiles_created, r.quarantined, r.duplicates) == (
        801,
        801,
        801,
        0,
        0,
    )
    s = ws.store
    assert s.scalar("SELECT count(*) FROM profiles") == 801
    assert (
        s.scalar("SELECT count(*) FROM identities WHERE id_type = 'user_id' AND linked_by = 'crm'")
        == 801
    )
    got = dict(s.rows("SELECT name, count(*) FROM profile_attributes GROUP BY 1"))
    expected = {c: int(ref[c].notna().sum()) for c in ref.columns if c != "household_id"}
    assert got == expected
    assert r.attributes_written == sum(expected.values())
    # numeric attributes also land in value_num; banded ones stay text
    kids = s.df("SELECT value, value_num FROM profile_attributes WHERE name = 'kids_count'")
    numeric = pd.to_numeric(ref["kids_count"], errors="coerce")
    assert kids["value_num"].notna().sum() == numeric.notna().sum()
    assert kids["value_num"].sum() == pytest.approx(numeric.sum())
    assert s.scalar("SELECT count(value_num) FROM profile_attributes WHERE name = 'income'") == 0
    one = dict(
        s.rows(
            "SELECT a.name, a.value FROM profile_attributes a JOIN identities i ON i.profile_id = a.profile_id"
            " WHERE i.id_key = 'user_id:1001'"
        )
    )
    row = ref.set_index("household_id").loc["1001"].dropna().to_dict()
    assert one == row
    assert set(s.rows("SELECT DISTINCT source FROM profile_attributes")) == {("crm",)}
    # a re-import is idempotent
    again = crm(ws, path, id_column="household_id", source="crm")
    assert again.profiles_created == 0 and again.imported == 801
    assert dict(s.rows("SELECT name, count(*) FROM profile_attributes GROUP BY 1")) == expected
    assert s.scalar("SELECT count(*) FROM profiles") == 801


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


PEOPLE = [
    {
        "customer_id": "C1",
        "email": "Ana.Lopez@Example.com",
        "phone": "+1 (415) 555-0101",
        "first_name": "Ana",
        "last_name": "López",
        "postal_code": "94110",
        "region": "NYC",
        "age": "34",
    },
    {
        "customer_id": "C2",
        "email": "bob@example.org",
        "phone": "415-555-0199",
        "first_name": "Bob",
        "last_name": "Stone",
        "postal_code": "10001",
        "region": "new york city",
        "age": "51",
    },
    {
        "customer_id": "C3",
        "email": "carol.zhang@example.net",
        "phone": "",
        "first_name": "Carol",
        "last_name": "Zhang",
        "postal_code": "60601",
        "region": "Chicago",
        "age": "",
    },
]
CLEAR = [
    "Ana.Lopez@Example.com",
    "ana.lopez@example.com",
    "bob@example.org",
    "carol.zhang@example.net",
    "4155550101",
    "555-0101",
    "415-555-0199",
    "4155550199",
    "López",
    "Lopez",
    "Stone",
    "Zhang",
    "Carol",
    "Bob",
]


def varchar_cells(store: Store) -> list[str]:
    """Every text-like value of every table (VARCHAR, JSON, BLOB as latin-1)."""
    out: list[str] = []
    tables = [
        r[0]
        for r in store.rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        )
    ]
    for table in tables:
        for column, dtype in store.columns(table).items():
            if dtype not in {"VARCHAR", "JSON", "BLOB"}:
                continue
            quoted = '"' + column.replace('"', '""') + '"'
            for (value,) in store.rows(
                f'SELECT {quoted} FROM "{table}" WHERE {quoted} IS NOT NULL'
            ):
                out.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return out


def test_pii_is_tokenised_and_encrypted_never_clear(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    settings = ProjectSettings(
        taxonomy=Taxonomy(
            allow_unknown_events=True, master={"region": {"New York": ["NYC", "New York City"]}}
        )
    )
    ws = Workspace.ephemeral(settings)
    ws.store.close()
    ws.store = Store(db)
    rows = [
        *PEOPLE,
        {"customer_id": "undefined", "email": "x@y.zz", "first_name": "Zed"},
        {"customer_id": ""},
    ]
    path = write_csv(tmp_path / "crm.csv", rows)
    r = crm(ws, path, id_column="customer_id", source="crm")
    assert r.imported == 3 and r.quarantined == 2
    assert r.reasons == {"blocked_identity": 1, "missing_identity": 1}
    s = ws.store
    # no PII attribute in profile_attributes; region mapped through the master taxonomy
    names = {n for (n,) in s.rows("SELECT DISTINCT name FROM profile_attributes")}
    assert names == {"postal_code", "region", "age"}
    regions = dict(
        s.rows(
            "SELECT i.id_value, a.value FROM profile_attributes a JOIN identities i USING (profile_id)"
            " WHERE a.name = 'region' AND i.id_type = 'user_id'"
        )
    )
    assert regions == {"C1": "New York", "C2": "New York", "C3": "Chicago"}
    # vault: ciphertext decrypts with the profile|field context, token matches the email token
    pid = s.scalar("SELECT profile_id FROM identities WHERE id_key = 'user_id:C1'")
    blob, token = s.rows(
        "SELECT ciphertext, token FROM pii_vault WHERE profile_id = ? AND field = 'email'", [pid]
    )[0]
    # (under the profile's own data key: crypto-shredding, see microseg.privacy.keys)
    dek = load_subject_keys(s, ws.keys, [pid])[pid]
    clear = decrypt_with(ws.keys, dek, bytes(blob), pii_context(pid, "email"))
    assert clear == "Ana.Lopez@Example.com"
    assert token == ws.keys.token("ana.lopez@example.com")
    assert s.scalar("SELECT profile_id FROM identities WHERE id_key = ?", ["email:" + token]) == pid
    fields = dict(s.rows("SELECT field, count(*) FROM pii_vault GROUP BY 1"))
    assert fields == {"email": 3, "phone": 2, "first_name": 3, "last_name": 3}
    phone_tok = s.scalar(
        "SELECT token FROM pii_vault WHERE profile_id = ? AND field = 'phone'", [pid]
    )
    assert phone_tok == ws.keys.token("4155550101", "phone")
    # the quarantined row keeps its email only as a token
    record = json.loads(s.scalar("SELECT record FROM quarantine WHERE reason = 'blocked_identity'"))
    assert record["email"] == ws.keys.token("x@y.zz") and "Zed" not in json.dumps(record)
    # scan every text cell of every table, then the raw database file
    cells = varchar_cells(s)
    for value in [*CLEAR, "x@y.zz", "Zed"]:
        assert not any(value.lower() in c.lower() for c in cells), value
    s.execute("CHECKPOINT")
    s.close()
    raw = db.read_bytes().lower()
    for value in [*CLEAR, "x@y.zz", "Zed"]:
        assert value.lower().encode() not in raw, value
        assert value.lower().encode("utf-16-le") not in raw, value


def test_crm_email_links_event_history(tmp_path: Path) -> None:
    ws = ws_with()
    events = tmp_path / "ev.jsonl"
    events.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "event_id": "e1",
                    "event_type": "page_view",
                    "timestamp": "2026-01-02T10:00:00Z",
                    "email": "BOB@example.org",
                },
                {
                    "event_id": "e2",
                    "event_type": "page_view",
                    "timestamp": "2026-01-02T10:01:00Z",
                    "anonymous_id": "a7",
                    "email": "bob@example.org",
                },
            ]
        )
    )
    ws.import_events(events)
    path = write_csv(tmp_path / "crm.csv", PEOPLE)
    r = crm(ws, path, id_column="customer_id")
    assert r.identities_linked == 2  # new email keys of C1 and C3; bob's email key already existed
    result = resolve(ws.store, ws.settings, probabilistic=False)
    assert result.deterministic_merges == 1
    assert len(ws.events("user_id:C2")) == 2
    # events arriving after the CRM load join directly through the email token
    late = tmp_path / "late.jsonl"
    late.write_text(
        json.dumps(
            {
                "event_id": "e3",
                "event_type": "purchase",
                "timestamp": "2026-01-03T10:00:00Z",
                "email": "carol.zhang@example.net",
            }
        )
    )
    ws.import_events(late)
    assert list(ws.events("user_id:C3")["event_id"]) == ["e3"]


def test_enrichment_and_survey_match_existing_profiles_only(tmp_path: Path) -> None:
    ws = ws_with()
    crm(ws, write_csv(tmp_path / "crm.csv", PEOPLE), id_column="customer_id")
    enrich = write_csv(
        tmp_path / "third_party.csv",
        [
            {
                "Email Address": "ana.lopez@example.com ",
                "Interest": "running",
                "Income Tier": "high",
            },
            {"Email Address": "nobody@example.com", "Interest": "golf", "Income Tier": "low"},
            {"Email Address": "not-an-email", "Interest": "chess", "Income Tier": "low"},
        ],
    )
    r = crm(
        ws,
        enrich,
        id_column="Email Address",
        id_type="email",
        source="third_party",
        create_missing=False,
    )
    assert (r.imported, r.profiles_created, r.quarantined) == (1, 0, 2)
    assert r.reasons == {"invalid_email": 1, "unknown_profile": 1}
    pid = ws.profile_id("user_id:C1")
    attrs = {
        n: (v, src)
        for n, v, src in ws.store.rows(
            "SELECT name, value, source FROM profile_attributes WHERE profile_id = ?", [pid]
        )
    }
    assert attrs["interest"] == ("running", "third_party")
    assert attrs["income_tier"] == ("high", "third_party")
    assert attrs["age"] == ("34", "crm")
    # survey on device ids, answers prefixed as explicit preferences
    ev = tmp_path / "ev.jsonl"
    ev.write_text(
        json.dumps(
            {
                "event_id": "e1",
                "event_type": "page_view",
                "timestamp": "2026-01-02T10:00:00Z",
                "device_id": "dev-9",
            }
        )
    )
    ws.import_events(ev)
    survey = tmp_path / "survey.jsonl"
    survey.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"device": "dev-9", "fav_category": "shoes", "nps": 9},
                {"device": "dev-9", "fav_category": "bags", "nps": 10},
                {"device": "dev-unknown", "fav_category": "hats", "nps": 3},
            ]
        )
    )
    r = crm(
        ws,
        survey,
        id_column="device",
        id_type="device_id",
        source="survey",
        create_missing=False,
        prefix="pref_",
    )
    assert (r.imported, r.duplicates, r.quarantined) == (1, 1, 1)
    prefs = {
        n: (v, num)
        for n, v, num in ws.store.rows(
            "SELECT name, value, value_num FROM profile_attributes WHERE profile_id = ?",
            [ws.profile_id("device_id:dev-9")],
        )
    }
    assert prefs == {"pref_fav_category": ("bags", None), "pref_nps": ("10", 10.0)}  # last row wins


def test_formats_mapping_and_errors(tmp_path: Path) -> None:
    ws = ws_with()
    df = pd.DataFrame(
        [
            {"id": "u1", "Segment": "gold", "score": 1.5, "skip_me": "x"},
            {"id": "u2", "Segment": "silver", "score": 2, "skip_me": "y"},
        ]
    )
    df.to_parquet(tmp_path / "crm.parquet")
    r = crm(
        ws, tmp_path / "crm.parquet", id_column="id", mapping={"Segment": "tier", "skip_me": None}
    )
    assert r.imported == 2
    got = sorted(
        ws.store.rows(
            "SELECT name, value, value_num FROM profile_attributes WHERE name IN ('tier', 'score')"
        )
    )
    assert got == [
        ("score", "1.5", 1.5),
        ("score", "2.0", 2.0),
        ("tier", "gold", None),
        ("tier", "silver", None),
    ]
    assert ws.store.scalar("SELECT count(*) FROM profile_attributes WHERE name = 'skip_me'") == 0
    with pytest.raises(ImportFileError, match="did you mean 'id'"):
        crm(ws, tmp_path / "crm.parquet", id_column="idd")
    with pytest.raises(ConfigError, match="unknown id type"):
        crm(ws, tmp_path / "crm.parquet", id_column="id", id_type="cookie")
    with pytest.raises(ImportFileError, match="mapping names column 'Segmnt'"):
        crm(ws, tmp_path / "crm.parquet", id_column="id", mapping={"Segmnt": "tier"})
    with pytest.raises(ImportFileError, match="file not found"):
        crm(ws, tmp_path / "nope.csv", id_column="id")
    (tmp_path / "bad name.csv").write_text("id,Bad Name!\nu1,3\n")
    crm(ws, tmp_path / "bad name.csv", id_column="id")  # 'Bad Name!' -> bad_name
    assert ws.store.scalar("SELECT value FROM profile_attributes WHERE name = 'bad_name'") == "3"
    (tmp_path / "clash.csv").write_text("id,a b,a-b\nu1,1,2\n")
    with pytest.raises(ImportFileError, match="both map to attribute 'a_b'"):
        crm(ws, tmp_path / "clash.csv", id_column="id")


def test_crm_secondary_ids_link_but_blocked_values_never_do(tmp_path: Path) -> None:
    ws = ws_with()
    rows = [
        {"cid": "k1", "device_id": "dev-1", "anonymous_id": "undefined"},
        {"cid": "k2", "device_id": "dev-1", "anonymous_id": "anon-2"},
        {"cid": "k3", "device_id": "N/A", "anonymous_id": "anon-3"},
        {"cid": "k4", "device_id": "n/a", "anonymous_id": "anon-4"},
    ]
    r = crm(ws, write_csv(tmp_path / "crm.csv", rows), id_column="cid")
    assert r.imported == 4 and r.identities_linked == 4  # dev-1, anon-2, anon-3, anon-4
    keys = {k for (k,) in ws.store.rows("SELECT id_key FROM identities")}
    assert not {"anonymous_id:undefined", "device_id:N/A", "device_id:n/a"} & keys
    assert ws.store.scalar("SELECT count(*) FROM profile_attributes") == 0  # ids are not attributes
    result = resolve(ws.store, ws.settings, probabilistic=False)
    # k2 shares dev-1 with k1: two known users, refused; k3 and k4 stay apart (blocked placeholder)
    assert result.merges == 0 and result.refused == {"known_user_conflict": 1}
    assert ws.profile_id("device_id:dev-1") == ws.profile_id("user_id:k1")
    assert ws.profile_id("user_id:k3") != ws.profile_id("user_id:k4")
