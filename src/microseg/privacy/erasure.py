"""Erasure (right to be forgotten) with crypto-shredding and a re-import guard.

``erase_subject`` removes a person from every table of the store — discovered from
``information_schema``, so tables added later are covered — by the columns that name a
profile, an id key or an identifier value; any other text column still mentioning one of
their ids loses the row (the audit log is scrubbed instead, keeping other people's entries).
Their data key is deleted (crypto-shredding: surviving copies of their ciphertext are dead),
engine-owned files (outbox, spool, exports under ``.microseg/``) are rewritten without their
lines, and the database file is compacted so deleted bytes do not linger on disk.

An erasure marker (HMAC of each id key, never the key) makes a later import of the same
person's events land in quarantine with reason ``erased_subject`` instead of resurrecting
them: the event pipeline calls :func:`quarantine_erased` on its stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlglot import exp

from microseg.privacy.crypto import KeyRing, normalise_email
from microseg.privacy.keys import load_subject_keys, shred
from microseg.privacy.markers import marker
from microseg.privacy.scrub import compact_store, scrub_files
from microseg.privacy.subject import (
    KEY_COLUMNS,
    PROFILE_COLUMNS,
    VALUE_COLUMNS,
    Subject,
    combine,
    linked_profiles,
    resolve_subject,
    subject_of,
)
from microseg.store import Store, event_ids, utcnow
from microseg.store import sql as q

log = logging.getLogger(__name__)
SKIP_TABLES = frozenset({"erasure_markers", "schema_migrations"})
SCRUB_TABLES = frozenset({"audit_log"})  # rewritten, not deleted: other people's entries stay
# Free-text search (ids inside JSON / text) covers tables about people plus these; definition
# tables (segments, content, experiments, models' metadata, keys) are not searched.
TEXT_SEARCH_TABLES = frozenset({"quarantine", "identity_merges"})
MIN_NEEDLE = 3  # shorter ids are matched only in id columns, never inside free text
ERASED = "[erased]"


@dataclass
class ErasureReport:
    """What an erasure removed."""

    erasure_id: str
    profile_ids: int
    id_keys: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    rows_scrubbed: dict[str, int] = field(default_factory=dict)
    keys_shredded: int = 0
    files_rewritten: dict[str, int] = field(default_factory=dict)
    files_outside_with_matches: list[str] = field(default_factory=list)
    compacted: bool = False
    linked_profiles_kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "erasure_id": self.erasure_id,
            "profile_ids": self.profile_ids,
            "id_keys": self.id_keys,
            "rows_deleted": dict(sorted(self.rows_deleted.items())),
            "rows_scrubbed": dict(sorted(self.rows_scrubbed.items())),
            "keys_shredded": self.keys_shredded,
            "files_rewritten": self.files_rewritten,
            "files_outside_with_matches": self.files_outside_with_matches,
            "compacted": self.compacted,
            "linked_profiles_kept": self.linked_profiles_kept,
        }


# -- erasure ------------------------------------------------------------------------------------
def _base_tables(store: Store) -> dict[str, dict[str, str]]:
    tables: dict[str, dict[str, str]] = {}
    for table, column, dtype in store.rows(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
        " JOIN information_schema.tables t USING (table_catalog, table_schema, table_name)"
        " WHERE t.table_type = 'BASE TABLE' AND c.table_schema = 'main'"
        " AND c.table_catalog = current_database()"
        " ORDER BY c.table_name, c.ordinal_position"
    ):
        if str(table) not in SKIP_TABLES and not str(table).startswith("_"):
            tables.setdefault(str(table), {})[str(column)] = str(dtype)
    return tables


def _needles(subject: Subject, pii: dict[str, str], tokens: list[str]) -> list[str]:
    """Strings that pin the person down: ids, keys, tokens, email / phone (clear and hashed).

    Names and addresses are left out on purpose: "Ana" in a product name is not the person
    (their names exist only encrypted in the vault, which goes with the profile)."""
    out = set(subject.profile_ids) | set(subject.id_keys) | set(tokens)
    for values in subject.values.values():
        out |= set(values)
    for name, value in pii.items():
        if name in {"email", "phone"}:
            out.add(value)
        if name == "email":
            norm = normalise_email(value)
            out |= {norm, hashlib.sha256(norm.encode()).hexdigest()}
        if name == "phone":
            digits = re.sub(r"\D", "", value)
            out |= {digits, hashlib.sha256(("+" + digits).encode()).hexdigest()}
    return sorted(n for n in out if n)


def needle_pattern(needles: list[str]) -> str | None:
    """A case-insensitive regex matching any needle not glued to other id characters."""
    long = [re.escape(n) for n in needles if len(n) >= MIN_NEEDLE]
    if not long:
        return None
    return r"(?i)(^|[^A-Za-z0-9_])(" + "|".join(long) + r")($|[^A-Za-z0-9_])"


def _condition(
    table: str, columns: dict[str, str], subject: Subject, values: list[str], pattern: str | None
) -> tuple[exp.Expr | None, list[Any]]:
    parts: list[exp.Expr] = []
    params: list[Any] = []
    search_text = table in TEXT_SEARCH_TABLES or any(
        c in PROFILE_COLUMNS | KEY_COLUMNS | VALUE_COLUMNS for c in columns
    )

    def member(column: str, items: list[str]) -> None:
        parts.append(q.func("list_contains", exp.Placeholder(), q.col(column)))
        params.append(items)

    for column, dtype in columns.items():
        if column in PROFILE_COLUMNS:
            member(column, list(subject.profile_ids))
        elif column in KEY_COLUMNS:
            member(column, list(subject.id_keys) + list(subject.profile_ids))
        elif column in VALUE_COLUMNS:
            member(column, values)
        elif pattern is not None and search_text and (dtype == "VARCHAR" or dtype == "JSON"):
            text = exp.cast(q.col(column), "VARCHAR")
            parts.append(q.func("regexp_matches", text, exp.Placeholder()))
            params.append(pattern)
    if not parts:
        return None, []
    return exp.or_(*parts), params


def erase_subject(
    workspace: Any,
    ref: str,
    reason: str,
    *,
    actor: str = "library",
    compact: bool = True,
    files: bool = True,
    include_linked: bool = False,
    skip_dirs: Sequence[Path] = (),
) -> ErasureReport:
    """Erase everything held about a person (see the module docstring); audited.

    Profiles linked to the person by an identity edge but not merged (see
    ``linked_profiles``) are erased too with ``include_linked``, else listed in the report.
    ``skip_dirs`` are left alone by the file scrub: a running API passes its live spool (a
    concurrent append could be lost in a rewrite; the import quarantines those lines)."""
    store: Store = workspace.store
    keys: KeyRing = workspace.keys
    subject = resolve_subject(workspace, ref)
    linked = linked_profiles(store, subject)
    if include_linked and linked:
        subject = combine([subject, *(subject_of(store, p) for p in linked)])
        linked = []
    pids = list(subject.profile_ids)
    pii: dict[str, str] = {}
    deks = load_subject_keys(store, keys, pids)
    from microseg.privacy.keys import decrypt_with

    for pid, name, blob in store.rows(
        "SELECT profile_id, field, ciphertext FROM pii_vault WHERE list_contains(?, profile_id)",
        [pids],
    ):
        # decrypted in memory only, to find the person in files and free text; never logged
        with contextlib.suppress(Exception):
            pii[str(name)] = decrypt_with(keys, deks.get(str(pid)), bytes(blob), f"{pid}|{name}")
    # Only the email token identifies one person; name / phone tokens are shared by everyone
    # with that name or a family landline (their own vault and match-key rows go by profile).
    tokens = [
        str(r[0])
        for r in store.rows(
            "SELECT token FROM pii_vault WHERE list_contains(?, profile_id) AND field = 'email'"
            " AND token IS NOT NULL",
            [pids],
        )
    ]
    values = sorted({v for vs in subject.values.values() for v in vs} | set(tokens))
    needles = _needles(subject, pii, tokens)
    pattern = needle_pattern(needles)
    report = ErasureReport(uuid.uuid4().hex[:16], len(pids), len(subject.id_keys))
    report.linked_profiles_kept = linked
    now = utcnow()
    erased_ids: list[int] = []
    with store.transaction():
        report.keys_shredded = shred(store, pids)
        store.con.executemany(
            "INSERT INTO erasure_markers VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            [(marker(keys, k), report.erasure_id, now) for k in subject.id_keys],
        )
        for table, columns in _base_tables(store).items():
            if table in SCRUB_TABLES:
                n = _scrub_audit(store, subject, pattern)
                if n:
                    report.rows_scrubbed[table] = n
                continue
            cond, params = _condition(table, columns, subject, values, pattern)
            if cond is not None and table == "events":  # their ids leave the event-id index
                erased_ids = event_ids.hashes_where(store, cond, params)
            if cond is not None:
                row = store.execute(
                    exp.Delete(this=q.table(table), where=exp.Where(this=cond)), params
                ).fetchone()
                if row and row[0]:
                    report.rows_deleted[table] = int(row[0])
            blobs = [c for c, t in columns.items() if t == "BLOB"]
            if blobs and table not in {"pii_vault", "subject_keys"}:
                n = _delete_blob_hits(store, table, blobs, needles)
                if n:
                    report.rows_deleted[table] = report.rows_deleted.get(table, 0) + n
        store.audit(
            actor,
            "subject.erase",
            "erasure:" + report.erasure_id,
            {
                "reason": _scrub_text(reason, pattern),
                "profile_count": len(pids),
                "id_keys": len(subject.id_keys),
                "rows_deleted": report.rows_deleted,
                "keys_shredded": report.keys_shredded,
            },
        )
    with store.lock:  # after the commit: the index stays a superset of the stored ids
        store.event_ids.forget(erased_ids)
    if files:
        report.files_rewritten, report.files_outside_with_matches = scrub_files(
            workspace.project.root,
            needles,
            store_path=store.path,
            key_path=_key_path(workspace),
            skip_dirs=skip_dirs,
        )
    if compact and store.path is not None:
        compact_store(store)
        report.compacted = True
    _notify(store, subject.profile_ids)
    return report


ErasureListener = Callable[[tuple[str, ...]], None]
_LISTENERS: weakref.WeakKeyDictionary[Store, list[ErasureListener]] = weakref.WeakKeyDictionary()


def on_erasure(store: Store, callback: ErasureListener) -> Callable[[], None]:
    """Call ``callback(profile_ids)`` after each erasure in ``store`` — for in-memory state
    (real-time evaluator, caches) that must forget the person; returns an unsubscribe."""
    listeners = _LISTENERS.setdefault(store, [])
    listeners.append(callback)
    return lambda: listeners.remove(callback) if callback in listeners else None


def _notify(store: Store, profile_ids: tuple[str, ...]) -> None:
    for callback in list(_LISTENERS.get(store, ())):
        try:
            callback(profile_ids)
        except Exception:  # the erasure is done; a broken listener must not hide that
            log.exception("erasure listener %r failed", callback)


def _key_path(workspace: Any) -> Path | None:
    with contextlib.suppress(AttributeError):
        return Path(workspace.project.key_path)
    return None


def _scrub_text(text: str, pattern: str | None) -> str:
    if pattern is None:
        return text
    return re.sub(pattern[4:], lambda m: m.group(1) + ERASED + m.group(3), text, flags=re.I)


def _scrub_audit(store: Store, subject: Subject, pattern: str | None) -> int:
    """Audit rows about the person lose the target; their ids are replaced in details."""
    ids = list(subject.profile_ids) + list(subject.id_keys)
    n = int(
        store.scalar(
            "SELECT count(*) FROM audit_log WHERE list_contains(?, target)"
            + (" OR regexp_matches(coalesce(CAST(details AS VARCHAR), ''), ?)" if pattern else ""),
            [ids, pattern] if pattern else [ids],
        )
    )
    if not n:
        return 0
    store.execute("UPDATE audit_log SET target = ? WHERE list_contains(?, target)", [ERASED, ids])
    if pattern:
        store.execute(
            "UPDATE audit_log SET details = regexp_replace(CAST(details AS VARCHAR), ?,"
            " '\\1" + ERASED + "\\3', 'g') WHERE regexp_matches(CAST(details AS VARCHAR), ?)",
            [pattern, pattern],
        )
        store.execute(
            "UPDATE audit_log SET target = regexp_replace(target, ?, '\\1" + ERASED + "\\3', 'g')"
            " WHERE regexp_matches(target, ?)",
            [pattern, pattern],
        )
    return n


def _delete_blob_hits(store: Store, table: str, columns: list[str], needles: list[str]) -> int:
    """Rows whose binary columns embed one of the person's ids (e.g. a model artifact)."""
    long = [n.encode() for n in needles if len(n) >= MIN_NEEDLE]
    if not long:
        return 0
    select = exp.select(exp.column("rowid"), *[q.col(c) for c in columns]).from_(q.table(table))
    hits = [
        int(row[0])
        for row in store.rows(select)
        if any(blob is not None and any(n in bytes(blob) for n in long) for blob in row[1:])
    ]
    if hits:
        store.execute(
            exp.Delete(
                this=q.table(table),
                where=exp.Where(
                    this=q.func("list_contains", exp.Placeholder(), exp.column("rowid"))
                ),
            ),
            [hits],
        )
    return len(hits)
