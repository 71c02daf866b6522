"""Probabilistic matching: normalisation, phonetic keys and planted-truth precision / recall."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from microseg.config.models import (
    IdentitySettings,
    ProbabilisticSettings,
    ProjectSettings,
    Taxonomy,
)
from microseg.ingest import matching
from microseg.ingest.identity import list_merges, list_refusals, resolve
from microseg.ingest.profiles import import_profiles
from microseg.workspace import Workspace

FIRST = [
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "christopher",
    "lisa",
    "daniel",
    "nancy",
    "matthew",
    "betty",
    "anthony",
    "sandra",
    "mark",
    "margaret",
    "donald",
    "ashley",
    "steven",
    "kimberly",
    "andrew",
    "emily",
    "paul",
    "donna",
    "joshua",
    "michelle",
    "kenneth",
    "carol",
    "kevin",
    "amanda",
    "brian",
    "melissa",
    "george",
    "deborah",
    "timothy",
    "stephanie",
    "ronald",
    "rebecca",
    "edward",
    "sharon",
    "jason",
    "laura",
    "jeffrey",
    "cynthia",
    "ryan",
    "kathleen",
    "jacob",
    "amy",
    "gary",
    "angela",
]
LAST = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("Robert", "R163"),
        ("Rupert", "R163"),
        ("Ashcraft", "A261"),
        ("Tymczak", "T522"),
        ("Pfister", "P236"),
        ("Jon", "J500"),
        ("John", "J500"),
        ("Smyth", "S530"),
        ("Lee", "L000"),
        ("", ""),
    ],
)
def test_soundex_reference_codes(name: str, code: str) -> None:
    assert matching.soundex(name) == code


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("phone", "+1 (415) 555-0101", "4155550101"),
        ("phone", "415.555.0101", "4155550101"),
        ("phone", "12", None),
        ("email", " Ana@Example.COM ", "ana@example.com"),
        ("email", "nope", None),
        ("postal_code", "SW1A 1AA", "sw1a1aa"),
        ("last_name", "  López-García ", "lopez garcia"),
        ("first_name", "123", None),
        ("city", "São  Paulo", "sao paulo"),
        ("segment", " Gold  Tier ", "gold tier"),
    ],
)
def test_normalise(field: str, value: str, expected: str | None) -> None:
    assert matching.normalise(field, value) == expected


def typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word))
    op = rng.choice(["sub", "del", "swap", "dup"])
    if op == "sub":
        return word[:i] + rng.choice("aeiourstn") + word[i + 1 :]
    if op == "del":
        return word[:i] + word[i + 1 :]
    if op == "swap" and i < len(word) - 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i] + word[i:]


def phone_format(digits: str, rng: random.Random) -> str:
    return rng.choice(
        [
            digits,
            f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
            f"+1 {digits[:3]}.{digits[3:6]}.{digits[6:]}",
        ]
    )


def planted(n: int = 700, seed: int = 7) -> tuple[pd.DataFrame, set[frozenset[str]]]:
    """CRM records keyed by email: ~35% of people have a duplicate record (truth) with a
    one-letter typo in a name (2/3), a reformatted or missing phone and 5% a postcode typo;
    ~20% share last name, postcode and phone with a household member (hard negatives)."""
    rng = random.Random(seed)
    postcodes = [f"{rng.randint(10000, 99999)}" for _ in range(40)]
    rows: list[dict[str, Any]] = []
    truth: set[frozenset[str]] = set()
    for i in range(n):
        person = {
            "first_name": rng.choice(FIRST).title(),
            "last_name": rng.choice(LAST).title(),
            "postal_code": rng.choice(postcodes),
            "phone": f"{rng.randint(200, 999)}{rng.randint(2000000, 9999999)}",
        }
        rows.append(
            {"email": f"p{i}@mail.test", **person, "phone": phone_format(person["phone"], rng)}
        )
        if rng.random() < 0.35:
            dup = dict(person)
            field = rng.choice(["first_name", "last_name", "none"])
            if field != "none":
                dup[field] = typo(dup[field], rng)
            if rng.random() < 0.05:
                dup["postal_code"] = typo(dup["postal_code"], rng)
            phone = "" if rng.random() < 0.25 else phone_format(person["phone"], rng)
            rows.append({"email": f"p{i}.alt@other.test", **dup, "phone": phone})
            truth.add(frozenset({f"p{i}@mail.test", f"p{i}.alt@other.test"}))
        if rng.random() < 0.2:
            other = rng.choice([f for f in FIRST if f != person["first_name"].lower()]).title()
            rows.append(
                {
                    "email": f"h{i}@mail.test",
                    **person,
                    "first_name": other,
                    "phone": phone_format(person["phone"], rng),
                }
            )
    return pd.DataFrame(rows), truth


def precision_recall(
    ws: Workspace, emails: list[str], truth: set[frozenset[str]]
) -> tuple[float, float]:
    key_of = {e: "email:" + ws.keys.token(e) for e in emails}
    prof = dict(ws.store.rows("SELECT id_key, profile_id FROM identities WHERE id_type = 'email'"))
    clusters: dict[str, list[str]] = {}
    for e in emails:
        clusters.setdefault(prof[key_of[e]], []).append(e)
    predicted = {frozenset(p) for c in clusters.values() for p in itertools.combinations(c, 2)}
    tp = len(predicted & truth)
    return (tp / len(predicted) if predicted else 1.0), tp / len(truth)


def run_planted(tmp_path: Path, with_keys: bool) -> tuple[float, float, Any]:
    df, truth = planted()
    path = tmp_path / "crm.csv"
    df.to_csv(path, index=False)
    ws = Workspace.ephemeral(ProjectSettings(taxonomy=Taxonomy(allow_unknown_events=True)))
    r = import_profiles(ws.store, ws.settings, ws.keys, path, id_column="email", id_type="email")
    assert r.imported == len(df)
    result = resolve(ws.store, ws.settings, keys=ws.keys if with_keys else None)
    p, rec = precision_recall(ws, list(df["email"]), truth)
    return p, rec, result


def test_planted_duplicates_precision_recall_with_fuzzy_names(tmp_path: Path) -> None:
    p, r, result = run_planted(tmp_path, with_keys=True)
    print(
        f"\nprobabilistic (Jaro-Winkler on decrypted names): precision={p:.3f} recall={r:.3f} merges={result.probabilistic_merges}"
    )
    assert result.deterministic_merges == 0
    assert p >= 0.97 and r >= 0.9


def test_planted_duplicates_precision_recall_tokens_only(tmp_path: Path) -> None:
    p, r, _result = run_planted(tmp_path, with_keys=False)
    print(f"\nprobabilistic (exact + phonetic tokens only): precision={p:.3f} recall={r:.3f}")
    assert p >= 0.97 and r >= 0.7


def test_probabilistic_merge_is_logged_with_score_and_respects_known_users(tmp_path: Path) -> None:
    rows = [
        {
            "cid": "A",
            "first_name": "Jonathan",
            "last_name": "Smith",
            "postal_code": "10001",
            "phone": "2125550100",
        },
        {
            "cid": "B",
            "first_name": "Jonathon",
            "last_name": "Smith",
            "postal_code": "10001",
            "phone": "212-555-0100",
        },
        {
            "cid": "C",
            "first_name": "Jonathan",
            "last_name": "Smith",
            "postal_code": "10001",
            "phone": "",
        },
    ]
    path = tmp_path / "crm.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    ws = Workspace.ephemeral(ProjectSettings(taxonomy=Taxonomy(allow_unknown_events=True)))
    # A and B are CRM customers keyed by user_id (two known users); C only by device id
    import_profiles(ws.store, ws.settings, ws.keys, path, id_column="cid")
    ws.store.execute(
        "UPDATE identities SET id_type = 'device_id', id_key = 'device_id:C', id_value = 'C' WHERE id_key = 'user_id:C'"
    )
    result = resolve(ws.store, ws.settings, keys=ws.keys)
    assert result.probabilistic_merges == 1
    # C joins A (exact on every field both have); A-B and B-C would join two known users
    assert result.refused == {"known_user_conflict": 2}
    merge = list_merges(ws.store).iloc[0]
    assert merge.rule == "probabilistic" and merge.score >= 0.9
    assert ws.profile_id("device_id:C") == ws.profile_id("user_id:A")
    refused = list_refusals(ws.store)
    assert set(refused["reason"]) == {"known_user_conflict"}


def test_threshold_and_disabled_switch(tmp_path: Path) -> None:
    rows = [
        {
            "e": "a@x.io",
            "first_name": "Maria",
            "last_name": "Garcia",
            "postal_code": "33101",
            "phone": "3055550101",
        },
        {
            "e": "b@x.io",
            "first_name": "Marie",
            "last_name": "Garcia",
            "postal_code": "33101",
            "phone": "3055550101",
        },
    ]
    path = tmp_path / "crm.csv"
    pd.DataFrame(rows).to_csv(path, index=False)

    def run(**prob: Any) -> int:
        settings = ProjectSettings(
            taxonomy=Taxonomy(allow_unknown_events=True),
            identity=IdentitySettings(probabilistic=ProbabilisticSettings(**prob)),
        )
        ws = Workspace.ephemeral(settings)
        import_profiles(ws.store, ws.settings, ws.keys, path, id_column="e", id_type="email")
        return resolve(ws.store, ws.settings, keys=ws.keys).probabilistic_merges

    # JW(maria, marie) = 0.92 -> score = (0.2*0.92 + 0.3 + 0.25 + 0.25) / 1.0 = 0.984
    assert run(threshold=0.98) == 1
    assert run(threshold=0.99) == 0
    assert run(enabled=False) == 0
