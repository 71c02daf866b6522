"""Audience export: identifier normalisation, SHA-256 hashing, platform CSV formats, k guard."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from activate_fixtures import *  # noqa: F403  (shared pytest fixtures: store, keys, clock, grant)

from microseg.activate.audience import (
    AudienceTooSmallError,
    export_audience,
    normalise_email,
    normalise_phone,
    sha256_hex,
)
from microseg.errors import ConfigError
from microseg.personalize.content import pii_context
from microseg.privacy.crypto import KeyRing
from microseg.store import Store


@pytest.mark.parametrize(
    ("raw", "gmail_dots", "expected"),
    [
        ("  JaneDoe@Gmail.com ", False, "janedoe@gmail.com"),
        ("Jane.Doe@gmail.com", True, "janedoe@gmail.com"),
        ("Jane.Doe@googlemail.com", True, "janedoe@googlemail.com"),
        ("jane.doe@example.com", True, "jane.doe@example.com"),
        ("not an email", False, None),
        ("", False, None),
        (None, False, None),
    ],
)
def test_normalise_email(raw: str | None, gmail_dots: bool, expected: str | None) -> None:
    assert normalise_email(raw, gmail_dots=gmail_dots) == expected


@pytest.mark.parametrize(
    ("raw", "cc", "expected"),
    [
        ("+1 (657) 777-0000", None, "16577770000"),
        ("+44 20 7946 0958", None, "442079460958"),
        ("0044 20 7946 0958", None, "442079460958"),
        ("020 7946 0958", "44", "442079460958"),
        ("020 7946 0958", None, None),  # national number without a known country
        ("16577770000", None, "16577770000"),
        ("12", None, None),
        ("+1234567890123456", None, None),  # longer than E.164 allows
        (None, None, None),
    ],
)
def test_normalise_phone(raw: str | None, cc: str | None, expected: str | None) -> None:
    assert normalise_phone(raw, default_country_code=cc) == expected


def test_golden_hash_from_platform_documentation() -> None:
    # published example: normalised "janedoe@gmail.com" hashes to this value
    assert sha256_hex(normalise_email(" JaneDoe@GMAIL.com") or "") == (
        "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69"
    )


def _people(
    store: Store, keys: KeyRing, grant: Callable[..., None], n: int, *, consent_every: int = 1
) -> list[str]:
    now = datetime(2026, 1, 1)
    ids = []
    for i in range(n):
        pid = f"p{i:04d}"
        ids.append(pid)
        values = {"email": f" Person.{i}@Example.com "}
        if i % 3 == 0:
            values["phone"] = f"+1 555 01{i:05d}"
        if i % 10 == 9:
            values = {"email": "broken"}  # no usable identifier
        for field, value in values.items():
            store.execute(
                "INSERT INTO pii_vault VALUES (?, ?, ?, NULL, ?)",
                [pid, field, keys.encrypt(value, pii_context(pid, field)), now],
            )
        if i % consent_every == 0:
            grant(pid, "advertising")
    return ids


def test_google_and_meta_files(store, keys, grant, tmp_path: Path) -> None:
    ids = _people(store, keys, grant, 150)
    google = export_audience(store, keys, ids, tmp_path / "g.csv", platform="google", k=100)
    assert (google.rows, google.requested, google.no_consent, google.no_identifier) == (
        135,
        150,
        0,
        15,
    )
    with (tmp_path / "g.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Email", "Phone"] and len(rows) == 136
    first = rows[1]
    assert first[0] == hashlib.sha256(b"person.0@example.com").hexdigest()
    assert first[1] == hashlib.sha256(b"+15550100000").hexdigest()  # E.164 with '+' for Google
    assert rows[2][1] == ""  # p0001 has no phone
    meta = export_audience(store, keys, ids, tmp_path / "m.csv", platform="meta", k=100)
    with (tmp_path / "m.csv").open(newline="") as fh:
        mrows = list(csv.reader(fh))
    assert mrows[0] == ["email", "phone"] and meta.rows == 135
    assert mrows[1][1] == hashlib.sha256(b"15550100000").hexdigest()  # digits only for Meta
    cells = [c for r in rows[1:] + mrows[1:] for c in r]
    assert all(re.fullmatch(r"[0-9a-f]{64}", c) or c == "" for c in cells)  # only hashes leave
    assert store.scalar("SELECT count(*) FROM audit_log WHERE action = 'audience.export'") == 2


def test_k_anonymity_guard_counts_after_consent(store, keys, grant, tmp_path: Path) -> None:
    ids = _people(store, keys, grant, 150, consent_every=2)
    with pytest.raises(
        AudienceTooSmallError,
        match=r"below the minimum of 100 \(150 requested, 75 without 'advertising' consent",
    ):
        export_audience(store, keys, ids, tmp_path / "a.csv")
    assert not (tmp_path / "a.csv").exists()
    small = export_audience(store, keys, ids, tmp_path / "a.csv", k=50)
    assert (small.no_consent, small.no_identifier, small.rows) == (
        75,
        0,
        75,
    )  # broken emails are odd ids
    with pytest.raises(ConfigError):
        export_audience(store, keys, ids, tmp_path / "a.csv", platform="tiktok")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        export_audience(store, keys, ids, tmp_path / "a.csv", k=0)
