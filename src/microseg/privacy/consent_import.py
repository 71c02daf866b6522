"""Bulk import of consent decisions from CSV (e.g. a consent-management platform's export).

Columns: one identifier column — ``profile_id``, ``user_id``, ``email`` (tokenised, never
stored in clear) or ``ref`` (any of those) — plus ``purpose``, ``granted`` (true/false,
yes/no, 1/0, granted/revoked, opt_in/opt_out) and optional ``recorded_at``, ``expires_at``,
``source``. Rows that cannot be used are reported with their line number; the good rows are
appended in one transaction, audited as one ``consent.import`` row listing the profiles and
published to the store's :class:`~microseg.privacy.consent.ConsentRegistry`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from microseg.errors import ConfigError, ImportFileError, display_path
from microseg.privacy.consent import ConsentChange, check_purpose, consent_registry
from microseg.privacy.crypto import normalise_email
from microseg.store import utcnow

ID_COLUMNS = ("profile_id", "user_id", "email", "ref")
TRUE = {"true", "yes", "y", "1", "granted", "grant", "opt_in", "opt-in", "optin"}
FALSE = {"false", "no", "n", "0", "revoked", "revoke", "opt_out", "opt-out", "optout"}


@dataclass
class ConsentImportResult:
    """Rows read, rows recorded and the rejected rows as (line, reason)."""

    rows_read: int
    imported: int
    rejected: list[tuple[int, str]] = field(default_factory=list)


def _timestamp(value: Any) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "":
        return None
    ts = pd.Timestamp(str(value).strip())
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def _resolve(workspace: Any, kind: str, values: list[str]) -> dict[str, str]:
    """Identifier value -> live profile id, in bulk."""
    store = workspace.store
    if kind == "email":
        keys = {v: "email:" + workspace.keys.token(normalise_email(v)) for v in values}
    elif kind == "user_id":
        keys = {v: "user_id:" + v for v in values}
    else:  # profile ids, id keys; a clear email in a ref is tokenised like event import does
        keys = {
            v: "email:" + workspace.keys.token(normalise_email(v[6:]))
            if v.startswith("email:") and "@" in v
            else v
            for v in values
        }
    found: dict[str, str] = {}
    if kind in {"profile_id", "ref"}:
        for pid, live in store.rows(
            "SELECT profile_id, coalesce(merged_into, profile_id) FROM profiles"
            " WHERE list_contains(?, profile_id)",
            [values],
        ):
            found[str(pid)] = str(live)
    by_key = dict(
        store.rows(
            "SELECT id_key, profile_id FROM identities WHERE list_contains(?, id_key)",
            [sorted(set(keys.values()))],
        )
    )
    for value, key in keys.items():
        if value not in found and key in by_key:
            found[value] = str(by_key[key])
    if kind == "ref":  # a bare id value that names exactly one profile
        rest = [v for v in values if v not in found]
        if rest:
            for value, pids in store.rows(
                "SELECT id_value, list(DISTINCT profile_id) FROM identities"
                " WHERE list_contains(?, id_value) GROUP BY id_value",
                [rest],
            ):
                if len(pids) == 1:
                    found[str(value)] = str(pids[0])
    return found


def import_consents(
    workspace: Any,
    path: str | Path,
    *,
    source: str | None = None,
    actor: str = "library",
) -> ConsentImportResult:
    """Append the consent decisions of a CSV file (see the module docstring for columns)."""
    path = Path(path)
    shown = display_path(path)
    if not path.exists():
        raise ImportFileError(f"{shown}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise ImportFileError(f"{shown}: cannot read CSV: {exc}") from None
    id_column = next((c for c in ID_COLUMNS if c in df.columns), None)
    if id_column is None or "purpose" not in df.columns or "granted" not in df.columns:
        raise ImportFileError(
            f"{shown}: needs columns purpose, granted and one of {', '.join(ID_COLUMNS)};"
            f" found: {', '.join(df.columns)}"
        )
    ids = [str(v).strip() for v in df[id_column]]
    profiles = _resolve(workspace, id_column, sorted({v for v in ids if v}))
    now = utcnow()
    rows: list[tuple[Any, ...]] = []
    rejected: list[tuple[int, str]] = []
    for i, record in enumerate(df.to_dict(orient="records")):
        line = i + 2  # header is line 1
        value = ids[i]
        if not value:
            rejected.append((line, f"empty {id_column}"))
            continue
        pid = profiles.get(value)
        if pid is None:
            rejected.append((line, f"no profile for this {id_column}"))
            continue
        purpose = str(record["purpose"]).strip()
        try:
            check_purpose(workspace.settings, purpose)
        except ConfigError as exc:
            rejected.append((line, str(exc)))
            continue
        flag = str(record["granted"]).strip().lower()
        if flag not in TRUE | FALSE:
            rejected.append((line, f"granted '{record['granted']}' is not true/false"))
            continue
        try:
            at = _timestamp(record.get("recorded_at")) or now
            expires = _timestamp(record.get("expires_at"))
        except ValueError as exc:
            rejected.append((line, f"bad timestamp: {exc}"))
            continue
        granted = flag in TRUE
        if not granted:
            expires = None
        elif expires is not None and expires <= at:
            rejected.append((line, f"expires_at {expires} is not after recorded_at {at}"))
            continue
        row_source = str(record.get("source") or "").strip() or source or "import:" + path.name
        rows.append((pid, purpose, granted, row_source, at, expires))
    store = workspace.store
    if rows:
        with store.transaction():
            store.con.executemany("INSERT INTO consents VALUES (?, ?, ?, ?, ?, ?)", rows)
            store.execute(
                "INSERT INTO audit_log VALUES (?, ?, 'consent.import', ?, ?)",
                [
                    now,
                    actor,
                    shown,
                    json.dumps(
                        {
                            "rows": len(rows),
                            "rejected": len(rejected),
                            "profiles": sorted({r[0] for r in rows}),
                        }
                    ),
                ],
            )
        registry = consent_registry(store)
        for pid, purpose, granted, row_source, at, expires in rows:
            registry.publish(ConsentChange(pid, purpose, granted, row_source, at, expires, actor))
    return ConsentImportResult(len(df), len(rows), rejected)
