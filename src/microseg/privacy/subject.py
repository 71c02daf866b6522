"""Data-subject rights (FEATURES G2): access export and correction.

A *subject* is a live profile plus every profile merged into it. Erasure is in
:mod:`microseg.privacy.erasure`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from microseg.config.models import IDENTITY_FIELDS
from microseg.errors import ConfigError, NotFoundError
from microseg.ingest.matching import exact_token, pii_context
from microseg.personalize.content import read_pii
from microseg.privacy.audit import audit_entries
from microseg.privacy.consent import consent_history, current_consents
from microseg.privacy.crypto import normalise_email
from microseg.privacy.keys import encrypt_with, ensure_subject_keys
from microseg.store import Store, utcnow

# Columns naming a profile, an id key, or an identifier value (the erasure reads these too).
PROFILE_COLUMNS = frozenset(
    {"profile_id", "profile_a", "profile_b", "winner_profile", "loser_profile", "merged_into"}
)
KEY_COLUMNS = frozenset({"id_key", "id_key_a", "id_key_b", "subject_a", "subject_b"})
VALUE_COLUMNS = frozenset({"user_id", "anonymous_id", "device_id", "email_token"})
# Tables exported under their own name with these row orders (others: under "other").
EXPORT_TABLES: dict[str, str] = {
    "profile_attributes": "name",
    "traits": "profile_id",
    "memberships": "segment",
    "membership_history": "changed_at",
    "scores": "scored_at",
    "cluster_membership": "assigned_at",
    "sends": "created_at",
    "journey_state": "journey",
    "timers": "due_at",
    "experiment_assignments": "assigned_at",
    "experiment_exposures": "exposed_at",
    "quality_outliers": "metric",
}
NOT_EXPORTED = frozenset({"pii_vault", "subject_keys", "match_keys", "profiles", "consents"})


@dataclass(frozen=True)
class Subject:
    """The profiles of one person and every identifier they are known by."""

    profile_id: str
    profile_ids: tuple[str, ...]
    id_keys: tuple[str, ...]
    values: dict[str, tuple[str, ...]] = field(default_factory=dict)  # id type -> id values


def resolve_subject(workspace: Any, ref: str) -> Subject:
    """The subject of a profile id, id key, bare id value or ``email:<clear address>``."""
    if ref.startswith("email:") and "@" in ref:
        ref = "email:" + workspace.keys.token(normalise_email(ref[6:]))
    try:
        pid = workspace.profile_id(ref)
    except NotFoundError:
        raise NotFoundError(f"no data subject for '{ref}'") from None
    return subject_of(workspace.store, pid)


def subject_of(store: Store, profile_id: str) -> Subject:
    """Collect the profile, the profiles merged into it (any depth) and their ids."""
    rows = store.rows(
        "WITH RECURSIVE tree(pid) AS (SELECT ?::VARCHAR UNION SELECT p.profile_id FROM"
        " profiles p JOIN tree t ON p.merged_into = t.pid) SELECT pid FROM tree",
        [profile_id],
    )
    pids = tuple(sorted({str(r[0]) for r in rows} | {profile_id}))
    ids = store.rows(
        "SELECT id_key, id_type, id_value FROM identities WHERE list_contains(?, profile_id)"
        " ORDER BY id_key",
        [list(pids)],
    )
    values: dict[str, list[str]] = {}
    for _, id_type, id_value in ids:
        values.setdefault(str(id_type), []).append(str(id_value))
    return Subject(
        profile_id,
        pids,
        tuple(str(r[0]) for r in ids),
        {k: tuple(v) for k, v in values.items()},
    )


def linked_profiles(store: Store, subject: Subject) -> list[str]:
    """Live profiles joined to the subject by an identity edge the resolver has not merged
    (e.g. refused by a merge guard): possibly the same person, possibly not."""
    rows = store.rows(
        "SELECT DISTINCT i.profile_id FROM identity_edges e JOIN identities i"
        " ON i.id_key = CASE WHEN list_contains(?, e.id_key_a) THEN e.id_key_b ELSE e.id_key_a END"
        " WHERE (list_contains(?, e.id_key_a) OR list_contains(?, e.id_key_b))"
        " AND NOT list_contains(?, i.profile_id) ORDER BY 1",
        [list(subject.id_keys)] * 3 + [list(subject.profile_ids)],
    )
    return [str(r[0]) for r in rows]


def combine(subjects: list[Subject]) -> Subject:
    """One subject covering several (the first one's profile id is the main one)."""
    values: dict[str, set[str]] = {}
    for sub in subjects:
        for k, v in sub.values.items():
            values.setdefault(k, set()).update(v)
    return Subject(
        subjects[0].profile_id,
        tuple(sorted({p for sub in subjects for p in sub.profile_ids})),
        tuple(sorted({k for sub in subjects for k in sub.id_keys})),
        {k: tuple(sorted(v)) for k, v in values.items()},
    )


def json_safe(value: Any) -> Any:
    """Plain JSON values: timestamps as ISO text, NaN/NaT as null, numpy scalars unwrapped."""
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return json_safe(value.item())
        except (ValueError, AttributeError):
            pass
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{str(k): json_safe(v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def _tables_with(store: Store, column: str) -> list[str]:
    return [
        str(r[0])
        for r in store.rows(
            "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables"
            " t USING (table_catalog, table_schema, table_name) WHERE c.column_name = ?"
            " AND t.table_type = 'BASE TABLE' AND c.table_schema = 'main'"
            " AND c.table_catalog = current_database() ORDER BY 1",
            [column],
        )
    ]


def export_subject(workspace: Any, ref: str, *, actor: str = "library") -> dict[str, Any]:
    """Everything held about a person, as JSON-ready data (PII decrypted, and audited)."""
    store: Store = workspace.store
    subject = resolve_subject(workspace, ref)
    pids = list(subject.profile_ids)
    out: dict[str, Any] = {
        "profile_id": subject.profile_id,
        "merged_profiles": [p for p in pids if p != subject.profile_id],
        "exported_at": utcnow().isoformat(),
    }
    out["profiles"] = _records(
        store.df("SELECT * FROM profiles WHERE list_contains(?, profile_id)", [pids])
    )
    out["identities"] = _records(
        store.df(
            "SELECT id_key, id_type, id_value, profile_id, first_seen, last_seen, linked_by"
            " FROM identities WHERE list_contains(?, profile_id) ORDER BY id_key",
            [pids],
        )
    )
    pii: dict[str, str] = {}
    fields = sorted(
        {
            str(r[0])
            for r in store.rows(
                "SELECT DISTINCT field FROM pii_vault WHERE list_contains(?, profile_id)", [pids]
            )
        }
    )
    for pid in pids:  # the live profile's values win over merged ones
        for name, value in read_pii(store, workspace.keys, pid, fields, actor=actor).items():
            if pid == subject.profile_id or name not in pii:
                pii[name] = value
    out["personal_data"] = dict(sorted(pii.items()))
    out["events"] = _records(
        store.df(
            "SELECT * FROM events WHERE list_contains(?, id_key) ORDER BY ts",
            [list(subject.id_keys)],
        )
    )
    for table in _tables_with(store, "profile_id"):
        if table in NOT_EXPORTED:
            continue
        df = store.df(
            "SELECT * FROM " + _quoted_table(table) + " WHERE list_contains(?, profile_id)", [pids]
        )
        if table in EXPORT_TABLES:
            order = EXPORT_TABLES[table]
            if order in df.columns and not df.empty:
                df = df.sort_values(order, kind="stable")
            out[table] = _records(df)
        elif not df.empty:
            out.setdefault("other", {})[table] = _records(df)
    out["consents"] = {
        "current": [json_safe(s.as_dict()) for p in pids for s in current_consents(store, p)],
        "history": _records(consent_history(store, pids)),
    }
    audit = pd.concat(
        [audit_entries(store, about=p, limit=10_000) for p in pids], ignore_index=True
    )
    out["audit"] = _records(audit.drop_duplicates().sort_values("logged_at", kind="stable"))
    store.audit(actor, "subject.export", subject.profile_id, {"profiles": pids})
    return out


def _quoted_table(name: str) -> str:
    """A table name from information_schema, quoted for fixed SQL text."""
    return '"' + name.replace('"', '""') + '"'


def correct_subject(
    workspace: Any, ref: str, field_name: str, value: str | None, *, actor: str = "library"
) -> dict[str, Any]:
    """Correct (or with ``value=None`` remove) one attribute of a person; audited without the
    value. PII fields are re-encrypted under the profile's key and re-tokenised."""
    store: Store = workspace.store
    subject = resolve_subject(workspace, ref)
    pid = subject.profile_id
    if field_name in IDENTITY_FIELDS:
        raise ConfigError(
            f"'{field_name}' is an identifier, not an attribute: identifiers are changed by"
            " merging/unmerging profiles or erased with the subject"
        )
    if field_name == "profile_id" or not field_name.replace("_", "").isalnum():
        raise ConfigError(f"'{field_name}' is not an attribute name")
    pii = field_name in workspace.settings.privacy.pii_attributes
    now = utcnow()
    with store.transaction():
        if pii:
            store.execute(
                "DELETE FROM pii_vault WHERE list_contains(?, profile_id) AND field = ?",
                [list(subject.profile_ids), field_name],
            )
            store.execute(
                "DELETE FROM match_keys WHERE list_contains(?, profile_id) AND field = ?",
                [list(subject.profile_ids), field_name],
            )
            if value is not None:
                dek = ensure_subject_keys(store, workspace.keys, [pid])[pid]
                blob = encrypt_with(dek, value, pii_context(pid, field_name))
                token = exact_token(workspace.keys, field_name, value)
                store.execute(
                    "INSERT INTO pii_vault VALUES (?, ?, ?, ?, ?)",
                    [pid, field_name, blob, token, now],
                )
        else:
            store.execute(
                "DELETE FROM profile_attributes WHERE list_contains(?, profile_id) AND name = ?",
                [list(subject.profile_ids), field_name],
            )
            if value is not None:
                store.execute(
                    "INSERT INTO profile_attributes VALUES (?, ?, ?, TRY_CAST(? AS DOUBLE),"
                    " 'correction', ?)",
                    [pid, field_name, value, value, now],
                )
        store.audit(
            actor,
            "subject.correct",
            pid,
            {"field": field_name, "pii": pii, "removed": value is None},
        )
    return {"profile_id": pid, "field": field_name, "pii": pii, "removed": value is None}


__all__ = [
    "KEY_COLUMNS",
    "PROFILE_COLUMNS",
    "VALUE_COLUMNS",
    "Subject",
    "combine",
    "correct_subject",
    "export_subject",
    "linked_profiles",
    "resolve_subject",
    "subject_of",
]
