"""Audience export for ad platforms: normalised, SHA-256-hashed identifiers in CSV.

Formats written (hashed upload files, UTF-8, comma separated, header row):

* ``google`` — Google Ads Customer Match, hashed-data file: columns ``Email``, ``Phone``.
  Email trimmed and lower-cased; phone in E.164 *with* the ``+`` (``+15551234567``);
  each value is the lower-case hex SHA-256 of the normalised string.
* ``meta`` — Meta (Facebook) Custom Audiences customer file: columns ``email``, ``phone``.
  Email trimmed and lower-cased; phone as digits with country code and *no* ``+`` or
  leading zeros (``15551234567``); values are lower-case hex SHA-256.

Optional ``gmail_dots=True`` also removes dots from the local part of ``gmail.com`` /
``googlemail.com`` addresses (Gmail ignores them, Google's own normalisation guidance
does this); it is off by default because Meta does not document it.

A k-anonymity guard refuses any export of fewer than ``k`` distinct profiles (default 100),
counted after consent filtering and after dropping profiles without a usable identifier.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from microseg.activate.policy import ConsentCheck, StoreConsent
from microseg.errors import ConfigError, MicrosegError
from microseg.personalize.content import read_pii_many
from microseg.privacy.crypto import KeyRing
from microseg.store import Store

Platform = Literal["google", "meta"]
DEFAULT_MIN_AUDIENCE = 100
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AudienceTooSmallError(MicrosegError):
    """The audience is below the minimum size (k-anonymity guard)."""


@dataclass(frozen=True)
class PlatformFormat:
    """Column headers and phone style of one ad platform's hashed upload file."""

    email_column: str
    phone_column: str
    phone_plus: bool


PLATFORMS: dict[str, PlatformFormat] = {
    "google": PlatformFormat("Email", "Phone", phone_plus=True),
    "meta": PlatformFormat("email", "phone", phone_plus=False),
}


def normalise_email(value: str | None, *, gmail_dots: bool = False) -> str | None:
    """Trim and lower-case; None if it is not an email address."""
    if value is None:
        return None
    email = value.strip().lower()
    if not _EMAIL_RE.match(email):
        return None
    if gmail_dots:
        local, _, domain = email.partition("@")
        if domain in {"gmail.com", "googlemail.com"}:
            email = f"{local.replace('.', '')}@{domain}"
    return email


def normalise_phone(value: str | None, *, default_country_code: str | None = None) -> str | None:
    """E.164 digits (country code first, no ``+``) or None if it cannot be one.

    ``+44 20 7946 0958`` and ``0044 20 7946 0958`` -> ``442079460958``; a national number
    with a trunk ``0`` (``020 7946 0958``) needs ``default_country_code`` (``"44"``).
    A number without ``+``/``00`` and no trunk zero is taken to include its country code.
    """
    if value is None:
        return None
    raw = value.strip()
    digits = re.sub(r"\D", "", raw)
    if not digits:
        return None
    if raw.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        if not default_country_code:
            return None
        digits = default_country_code.lstrip("+") + digits.lstrip("0")
    if digits.startswith("0") or not 8 <= len(digits) <= 15:
        return None
    return digits


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AudienceExport:
    """What an export wrote."""

    path: Path
    platform: str
    rows: int
    requested: int
    no_consent: int
    no_identifier: int


def export_audience(
    store: Store,
    keys: KeyRing,
    profile_ids: Iterable[str],
    path: str | Path,
    *,
    platform: Platform = "google",
    k: int = DEFAULT_MIN_AUDIENCE,
    purpose: str = "advertising",
    consent_ok: ConsentCheck | None = None,
    default_country_code: str | None = None,
    gmail_dots: bool = False,
    actor: str = "library",
) -> AudienceExport:
    """Write a hashed audience file for ``platform``; refuses audiences smaller than ``k``."""
    if platform not in PLATFORMS:
        raise ConfigError(f"unknown platform '{platform}' (use: {', '.join(PLATFORMS)})")
    if k < 1:
        raise ConfigError(f"minimum audience size k must be >= 1, got {k}")
    fmt = PLATFORMS[platform]
    ids = sorted(set(profile_ids))
    if consent_ok is None:
        allowed = StoreConsent(store).granted_many(ids, purpose)
    else:
        allowed = {p for p in ids if consent_ok(p, purpose)}
    consented = [p for p in ids if p in allowed]
    emails = read_pii_many(store, keys, consented, "email")
    phones = read_pii_many(store, keys, consented, "phone")
    rows: list[tuple[str, str]] = []
    for pid in consented:
        email = normalise_email(emails.get(pid), gmail_dots=gmail_dots)
        phone = normalise_phone(phones.get(pid), default_country_code=default_country_code)
        if email is None and phone is None:
            continue
        phone_value = None if phone is None else ("+" + phone if fmt.phone_plus else phone)
        rows.append(
            (sha256_hex(email) if email else "", sha256_hex(phone_value) if phone_value else "")
        )
    if len(rows) < k:
        raise AudienceTooSmallError(
            f"audience has {len(rows)} exportable profiles, below the minimum of {k}"
            f" ({len(ids)} requested, {len(ids) - len(consented)} without '{purpose}' consent,"
            f" {len(consented) - len(rows)} without a usable email or phone)"
        )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([fmt.email_column, fmt.phone_column])
        writer.writerows(rows)
    store.audit(
        actor, "audience.export", str(out), {"platform": platform, "rows": len(rows), "k": k}
    )
    return AudienceExport(
        out, platform, len(rows), len(ids), len(ids) - len(consented), len(consented) - len(rows)
    )
