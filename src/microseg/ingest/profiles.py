"""CRM, enrichment and survey profile import (FEATURES D2, D6).

One path for all three: a file of records keyed by an identifier (user id, email, device id)
becomes profile attributes. The work is set-based SQL in DuckDB; the only per-value Python is
tokenising and encrypting PII, done by vectorised (Arrow) functions registered on the
connection so the clear values never reach a stored table:

* plain attributes are upserted into ``profile_attributes`` (text + number when numeric),
  categorical values mapped through the master taxonomy of the same name (e.g. ``region``);
* PII attributes (``settings.privacy.pii_attributes``) go to ``pii_vault`` only: AES-256-GCM
  ciphertext bound to ``profile_id|field`` plus an HMAC token of the normalised value;
* identity columns (``email``, ``device_id``, ``user_id``, ``anonymous_id``) become id keys of
  the profile (emails as ``email:<token>``, the same token event import uses) and identity
  edges for the resolver;
* fields used for probabilistic matching get match keys (see ``matching``);
* rows without a usable id are quarantined with a reason; later rows for the same id win.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from microseg.config.models import IDENTITY_FIELDS, NAME_RE, ProjectSettings
from microseg.config.sources import detect_format
from microseg.console import Progress, SilentProgress
from microseg.errors import ConfigError, ImportFileError, did_you_mean, display_path
from microseg.ingest.matching import (
    EMAIL_RE,
    NAME_LIKE_FIELDS,
    exact_token,
    phonetic_token,
)
from microseg.privacy.crypto import KeyRing
from microseg.privacy.keys import DekCache
from microseg.store import Store, utcnow
from microseg.store import sql as q

STAGE = "_ms_crm"
VALID = "_ms_crm_valid"


@dataclass
class ProfileImportResult:
    """What one profile import did; rows_read == imported + duplicates + quarantined."""

    batch_id: str
    source: str
    rows_read: int
    imported: int
    duplicates: int
    quarantined: int
    profiles_created: int
    attributes_written: int
    pii_values: int
    identities_linked: int
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class _Column:
    source: str
    alias: str  # stage column
    attribute: str
    kind: str  # 'identity' | 'pii' | 'plain'


def _attribute_name(column: str) -> str:
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", column.strip().lower())).strip("_")


def _reader(path: Path, fmt: str) -> str:
    if fmt == "parquet":
        return "read_parquet(?)"
    if fmt == "jsonl":
        return "read_json(?, format = 'newline_delimited')"
    return "read_csv(?, all_varchar = TRUE, header = TRUE)"


def _register_udfs(con: duckdb.DuckDBPyConnection, keys: KeyRing) -> DekCache:
    """Token / phonetic / encrypt UDFs; PII is encrypted under each profile's own key."""
    deks = DekCache(keys)

    def token(fields: pa.Array, values: pa.Array) -> pa.Array:
        return pa.array(
            [
                None if v is None else exact_token(keys, f, v)
                for f, v in zip(fields.to_pylist(), values.to_pylist(), strict=True)
            ],
            type=pa.string(),
        )

    def phonetic(fields: pa.Array, values: pa.Array) -> pa.Array:
        return pa.array(
            [
                None if v is None else phonetic_token(keys, f, v)
                for f, v in zip(fields.to_pylist(), values.to_pylist(), strict=True)
            ],
            type=pa.string(),
        )

    def encrypt(values: pa.Array, contexts: pa.Array) -> pa.Array:
        return pa.array(
            deks.encrypt_many(values.to_pylist(), contexts.to_pylist()), type=pa.binary()
        )

    for name, fn, rtype in (
        ("ms_match_token", token, "VARCHAR"),
        ("ms_phonetic_token", phonetic, "VARCHAR"),
        ("ms_encrypt", encrypt, "BLOB"),
    ):
        with contextlib.suppress(duckdb.InvalidInputException, duckdb.CatalogException):
            con.remove_function(name)
        args = ["VARCHAR", "VARCHAR"]
        con.create_function(name, fn, args, rtype, type="arrow", null_handling="special")  # type: ignore[call-overload]
    return deks


def _plan_columns(
    settings: ProjectSettings,
    columns: list[str],
    id_column: str,
    id_type: str,
    mapping: dict[str, str | None],
    prefix: str,
) -> list[_Column]:
    for col in mapping:
        if col not in columns:
            raise ImportFileError(
                f"mapping names column '{col}', which the file does not have"
                f"{did_you_mean(col, columns)}"
            )
    pii = set(settings.privacy.pii_attributes)
    declared = settings.privacy.profile_attributes
    allowed = None if declared is None else set(declared)
    planned: list[_Column] = []
    seen: dict[str, str] = {}
    for i, col in enumerate(columns):
        if col == id_column:
            continue
        target = mapping.get(col, _attribute_name(col))
        if not target:
            continue
        if target in IDENTITY_FIELDS:
            kind, name = "identity", target
        elif target in pii:
            kind, name = "pii", target
        else:
            kind, name = "plain", prefix + target
            if allowed is not None and name not in allowed:
                continue  # minimisation: undeclared profile columns are not stored
        if not NAME_RE.match(name):
            raise ImportFileError(
                f"column '{col}' gives attribute name '{name}', which is not lower_snake_case;"
                " rename it with a mapping (column=attribute)"
            )
        if name in seen:
            raise ImportFileError(
                f"columns '{seen[name]}' and '{col}' both map to attribute '{name}'"
            )
        if kind == "identity" and name == id_type:
            raise ImportFileError(
                f"column '{col}' maps to '{name}', the type of the id column itself"
            )
        seen[name] = col
        planned.append(_Column(col, f"_c{i}", name, kind))
    if id_type == "email" and "email" in pii and "email" not in seen:
        planned.append(_Column(id_column, "_id", "email", "pii"))
    return planned


def import_profiles(
    store: Store,
    settings: ProjectSettings,
    keys: KeyRing,
    path: str | Path,
    *,
    id_column: str,
    id_type: str = "user_id",
    mapping: dict[str, str | None] | None = None,
    source: str = "crm",
    create_missing: bool = True,
    prefix: str = "",
    fmt: str | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ProfileImportResult:
    """Import a CSV / JSON Lines / Parquet file of profile records keyed by ``id_column``.

    ``mapping`` renames source columns to attributes (``None`` or '' skips a column); other
    columns become attributes named after them (lower_snake_case) with ``prefix``. With
    ``create_missing=False`` (enrichment, surveys) rows whose id matches no known profile are
    quarantined as ``unknown_profile`` instead of creating one.
    """
    started = time.perf_counter()
    progress = progress or SilentProgress()
    if id_type not in IDENTITY_FIELDS:
        raise ConfigError(
            f"unknown id type '{id_type}'{did_you_mean(id_type, IDENTITY_FIELDS)};"
            f" use one of {', '.join(IDENTITY_FIELDS)}"
        )
    path = Path(path)
    shown = display_path(path)
    if not path.exists():
        raise ImportFileError(f"{shown}: file not found")
    if path.stat().st_size == 0:
        raise ImportFileError(f"{shown}: file is empty")
    file_format = detect_format(path, fmt)  # type: ignore[arg-type]
    now = now or utcnow()
    batch_id = uuid.uuid4().hex[:16]
    reader = _reader(path, file_format)
    try:
        described = store.rows("DESCRIBE SELECT * FROM " + reader, [str(path)])
    except duckdb.Error as exc:
        raise ImportFileError(f"{shown}: cannot read file: {str(exc).splitlines()[0]}") from None
    columns = [r[0] for r in described]
    if id_column not in columns:
        raise ImportFileError(
            f"{shown}: no id column '{id_column}'{did_you_mean(id_column, columns)};"
            f" columns: {', '.join(columns[:20])}"
        )
    planned = _plan_columns(settings, columns, id_column, id_type, dict(mapping or {}), prefix)
    progress.start(f"import profiles {path.name}", total=4)
    try:
        with store.lock:
            deks = _register_udfs(store.con, keys)
            _stage(store, settings, reader, path, shown, id_column, id_type, planned)
            progress.update(note="store")
            result = _commit(
                store,
                settings,
                batch_id,
                source,
                shown,
                id_type,
                planned,
                create_missing,
                now,
                {"id_column": id_column, "id_type": id_type, "mapping": mapping or {}},
                deks,
            )
    finally:
        progress.stop()
        store.execute("DROP TABLE IF EXISTS _ms_crm")
        store.execute("DROP TABLE IF EXISTS _ms_crm_valid")
    result.seconds = time.perf_counter() - started
    return result


def _text(column: str) -> exp.Expression:
    return exp.Nullif(this=exp.Trim(this=exp.cast(q.col(column), "VARCHAR")), expression=q.lit(""))


def _stage(
    store: Store,
    settings: ProjectSettings,
    reader: str,
    path: Path,
    shown: str,
    id_column: str,
    id_type: str,
    planned: list[_Column],
) -> None:
    """Stage every row with its id key and the first failed check as reason."""
    blocked = [v.lower() for v in settings.identity.blocked_values]
    select = exp.select(
        exp.alias_(exp.Window(this=exp.RowNumber()), "_row", quoted=True),
        exp.alias_(_text(id_column), "_id", quoted=True),
    )
    for c in planned:
        if c.alias != "_id":
            select = select.select(exp.alias_(_text(c.source), c.alias, quoted=True))
    select = select.from_(q.parse_static("SELECT * FROM " + reader).args["from_"].this.copy())
    try:
        store.execute(
            q.create_temp(STAGE, select),
            [str(path)],
        )
    except duckdb.Error as exc:
        raise ImportFileError(f"{shown}: cannot read file: {str(exc).splitlines()[0]}") from None
    email_check = (
        "WHEN NOT regexp_full_match(lower(_id), ?) THEN 'invalid_email' "
        if id_type == "email"
        else "WHEN ? IS NULL THEN NULL "
    )
    value = "ms_match_token('email', _id)" if id_type == "email" else "_id"
    store.execute(
        "ALTER TABLE _ms_crm ADD COLUMN _reason VARCHAR; "
        "ALTER TABLE _ms_crm ADD COLUMN id_key VARCHAR;"
    )
    store.execute(
        "UPDATE _ms_crm SET _reason = CASE WHEN _id IS NULL THEN 'missing_identity' "
        "WHEN list_contains(?, lower(_id)) THEN 'blocked_identity' " + email_check + "END",
        [blocked, EMAIL_RE.pattern],
    )
    store.execute(
        "UPDATE _ms_crm SET id_key = ? || " + value + " WHERE _reason IS NULL", [id_type + ":"]
    )


def _record(planned: list[_Column], id_type: str) -> Any:
    """Quarantine record of a row; PII values appear only as tokens."""
    pairs: list[Any] = [q.lit("_id")]
    pairs.append(
        q.func("ms_match_token", q.lit("email"), q.col("_id"))
        if id_type == "email"
        else q.col("_id")
    )
    for c in planned:
        if c.alias == "_id":
            continue
        pairs.append(q.lit(c.source))
        if c.kind == "pii" or c.attribute == "email":
            pairs.append(q.func("ms_match_token", q.lit(c.attribute), q.col(c.alias)))
        else:
            pairs.append(q.col(c.alias))
    return q.func("json_object", *pairs)


def _commit(
    store: Store,
    settings: ProjectSettings,
    batch_id: str,
    source: str,
    shown: str,
    id_type: str,
    planned: list[_Column],
    create_missing: bool,
    now: datetime,
    mapping: dict[str, Any],
    deks: DekCache,
) -> ProfileImportResult:
    with store.transaction():
        # Latest row per id key wins; profile = the key's current profile (or a new one).
        store.execute(
            """
            CREATE OR REPLACE TEMP TABLE _ms_crm_valid AS
            SELECT s.*, i.profile_id AS _existing,
                   coalesce(i.profile_id, 'p_' || substr(md5(s.id_key), 1, 20)) AS profile_id
            FROM _ms_crm s LEFT JOIN identities i ON i.id_key = s.id_key
            WHERE s._reason IS NULL
            QUALIFY row_number() OVER (PARTITION BY s.id_key ORDER BY s._row DESC) = 1
            """
        )
        rows_read = int(store.scalar("SELECT count(*) FROM _ms_crm"))
        valid = int(store.scalar("SELECT count(*) FROM _ms_crm WHERE _reason IS NULL"))
        if not create_missing:
            store.execute(
                "UPDATE _ms_crm SET _reason = 'unknown_profile' WHERE _row IN"
                " (SELECT _row FROM _ms_crm_valid WHERE _existing IS NULL)"
            )
            store.execute("DELETE FROM _ms_crm_valid WHERE _existing IS NULL")
        _derive(store, settings, planned, deks)
        imported = int(store.scalar("SELECT count(*) FROM _ms_crm_valid"))
        reasons = {
            str(k): int(n)
            for k, n in store.rows(
                "SELECT _reason, count(*) FROM _ms_crm WHERE _reason IS NOT NULL GROUP BY 1"
            )
        }
        quarantined = sum(reasons.values())
        duplicates = valid - imported - reasons.get("unknown_profile", 0)
        _quarantine(store, batch_id, source, planned, id_type, now)
        created = int(store.scalar("SELECT count(*) FROM _ms_crm_valid WHERE _existing IS NULL"))
        store.execute(
            "INSERT INTO identities SELECT id_key, ?, CASE WHEN ? = 'email' THEN"
            " substr(id_key, 7) ELSE _id END, profile_id, ?, ?, 'crm', NULL"
            " FROM _ms_crm_valid WHERE _existing IS NULL",
            [id_type, id_type, now, now],
        )
        store.execute(
            "INSERT INTO profiles SELECT DISTINCT profile_id, ?, ?, NULL FROM _ms_crm_valid v"
            " WHERE NOT EXISTS (SELECT 1 FROM profiles p WHERE p.profile_id = v.profile_id)",
            [now, now],
        )
        store.execute(
            "UPDATE profiles SET updated_at = ? WHERE profile_id IN"
            " (SELECT profile_id FROM _ms_crm_valid)",
            [now],
        )
        linked = _link_identities(store, settings, planned, source, now)
        attrs = _write_attributes(store, settings, planned, source, now)
        pii = _write_pii(store, settings, planned, source, now)
        store.execute(
            "INSERT INTO import_batches VALUES (?, 'profiles', ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                batch_id,
                shown,
                rows_read,
                imported,
                duplicates,
                quarantined,
                now,
                utcnow(),
                json.dumps({**mapping, "source": source}),
            ],
        )
        store.audit(
            "import",
            "import_profiles",
            shown,
            {
                "batch_id": batch_id,
                "source": source,
                "imported": imported,
                "quarantined": quarantined,
            },
        )
    return ProfileImportResult(
        batch_id,
        source,
        rows_read,
        imported,
        duplicates,
        quarantined,
        created,
        attrs,
        pii,
        linked,
        dict(sorted(reasons.items())),
    )


def _derive(
    store: Store, settings: ProjectSettings, planned: list[_Column], deks: DekCache
) -> None:
    """Tokens (_t), phonetic tokens (_p) and ciphertexts (_x) of each value, computed once."""
    pii = set(settings.privacy.pii_attributes)
    fields = settings.identity.probabilistic.fields
    extra: list[Any] = []
    for c in planned:
        secret = c.kind == "pii" or c.attribute == "email"
        value = q.col(c.alias)
        if secret or (c.kind == "plain" and c.attribute in fields):
            token = q.func("ms_match_token", q.lit(c.attribute), value)
            extra.append(exp.alias_(token, c.alias + "_t", quoted=True))
        if secret and c.attribute in pii:
            context = exp.DPipe(this=q.col("profile_id"), expression=q.lit("|" + c.attribute))
            extra.append(
                exp.alias_(q.func("ms_encrypt", value, context), c.alias + "_x", quoted=True)
            )
        if c.attribute in fields and c.attribute in NAME_LIKE_FIELDS:
            phonetic = q.func("ms_phonetic_token", q.lit(c.attribute), value)
            extra.append(exp.alias_(phonetic, c.alias + "_p", quoted=True))
    if not extra:
        return
    deks.preload_table(store, VALID)
    select = exp.select(exp.Star(), *extra).from_(q.table(VALID))
    store.execute(q.create_temp(VALID, select))
    deks.persist(store)  # new per-profile keys, in the import's transaction


def _quarantine(
    store: Store, batch_id: str, source: str, planned: list[_Column], id_type: str, now: datetime
) -> None:
    select = (
        exp.select(
            q.lit(batch_id),
            q.lit(source),
            q.col("_row"),
            q.col("_reason"),
            exp.Case(
                ifs=[
                    exp.If(
                        this=exp.EQ(this=q.col("_reason"), expression=q.lit("unknown_profile")),
                        true=q.lit(f"no profile has this {id_type}"),
                    ),
                    exp.If(
                        this=exp.EQ(this=q.col("_reason"), expression=q.lit("blocked_identity")),
                        true=q.lit(f"{id_type} is a blocked placeholder value"),
                    ),
                ],
                default=exp.DPipe(this=q.lit(f"{id_type}: "), expression=q.col("_reason")),
            ),
            _record(planned, id_type),
            exp.cast(q.lit(now.isoformat(sep=" ")), "TIMESTAMP"),
        )
        .from_(q.table(STAGE))
        .where(exp.Not(this=exp.Is(this=q.col("_reason"), expression=exp.Null())))
    )
    cols = ("batch_id", "source", "row_number", "reason", "detail", "record", "quarantined_at")
    store.execute(
        exp.Insert(
            this=exp.Schema(this=q.table("quarantine"), expressions=[q.ident(c) for c in cols]),
            expression=select,
        )
    )


def _link_identities(
    store: Store, settings: ProjectSettings, planned: list[_Column], source: str, now: datetime
) -> int:
    """Secondary ids of each record: new keys join the profile; every pair becomes an edge."""
    parts = []
    blocked = [v.lower() for v in settings.identity.blocked_values]
    for c in planned:
        if c.kind != "identity" and not (c.attribute == "email" and c.alias != "_id"):
            continue
        if c.attribute == "email":
            value: Any = q.col(c.alias + "_t")
        else:
            value = exp.Case(
                ifs=[
                    exp.If(
                        this=q.func(
                            "list_contains",
                            exp.Array(expressions=[q.lit(b) for b in blocked]),
                            exp.Lower(this=q.col(c.alias)),
                        ),
                        true=exp.Null(),
                    )
                ],
                default=q.col(c.alias),
            )
        parts.append(
            exp.select(
                exp.alias_(q.col("profile_id"), "profile_id", quoted=True),
                exp.alias_(q.col("id_key"), "primary_key", quoted=True),
                exp.alias_(q.lit(c.attribute), "id_type", quoted=True),
                exp.alias_(value, "id_value", quoted=True),
            ).from_(q.table(VALID))
        )
    if not parts:
        return 0
    union: exp.Expression = parts[0]
    for p in parts[1:]:
        union = exp.union(union, p, distinct=False)
    store.execute(
        q.create_temp(
            "_ms_crm_ids",
            exp.select(
                exp.Star(),
                exp.alias_(
                    exp.DPipe(
                        this=exp.DPipe(this=q.col("id_type"), expression=q.lit(":")),
                        expression=q.col("id_value"),
                    ),
                    "id_key",
                    quoted=True,
                ),
            )
            .from_(exp.Subquery(this=union, alias=exp.TableAlias(this=q.ident("u"))))
            .where(exp.Not(this=exp.Is(this=q.col("id_value"), expression=exp.Null()))),
        )
    )
    new = int(
        store.scalar(
            "SELECT count(DISTINCT id_key) FROM _ms_crm_ids k"
            " WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.id_key = k.id_key)"
        )
    )
    store.execute(
        "INSERT INTO identities SELECT id_key, any_value(id_type), any_value(id_value),"
        " min(profile_id), ?, ?, 'crm', NULL FROM _ms_crm_ids k"
        " WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.id_key = k.id_key) GROUP BY id_key",
        [now, now],
    )
    store.execute(
        "INSERT INTO identity_edges SELECT least(primary_key, id_key), greatest(primary_key, id_key),"
        " ?, ? FROM _ms_crm_ids k WHERE primary_key <> id_key AND NOT EXISTS (SELECT 1 FROM"
        " identity_edges e WHERE e.id_key_a = least(k.primary_key, k.id_key)"
        " AND e.id_key_b = greatest(k.primary_key, k.id_key)) GROUP BY 1, 2",
        ["crm:" + source, now],
    )
    store.execute("DROP TABLE IF EXISTS _ms_crm_ids")
    return new


def _canonical(settings: ProjectSettings, attribute: str, value: exp.Expression) -> exp.Expression:
    synonyms = settings.taxonomy.synonyms(attribute)
    if not synonyms:
        return value
    key = exp.Lower(this=value)
    return exp.Case(
        ifs=[
            exp.If(this=exp.EQ(this=key, expression=q.lit(k)), true=q.lit(v))
            for k, v in synonyms.items()
        ],
        default=value,
    )


def _write_attributes(
    store: Store, settings: ProjectSettings, planned: list[_Column], source: str, now: datetime
) -> int:
    """Upsert plain attributes (text, number when it parses) with their source label."""
    plain = [c for c in planned if c.kind == "plain"]
    if not plain:
        return 0
    parts = []
    for c in plain:
        value = _canonical(settings, c.attribute, q.col(c.alias))
        parts.append(
            exp.select(
                exp.alias_(q.col("profile_id"), "profile_id", quoted=True),
                exp.alias_(q.lit(c.attribute), "name", quoted=True),
                exp.alias_(value, "value", quoted=True),
            )
            .from_(q.table(VALID))
            .where(exp.Not(this=exp.Is(this=q.col(c.alias), expression=exp.Null())))
        )
    union: exp.Expression = parts[0]
    for p in parts[1:]:
        union = exp.union(union, p, distinct=False)
    select = exp.select(
        q.col("profile_id"),
        q.col("name"),
        q.col("value"),
        q.try_cast(q.col("value"), "number"),
        q.lit(source),
        exp.cast(q.lit(now.isoformat(sep=" ")), "TIMESTAMP"),
    ).from_(exp.Subquery(this=union, alias=exp.TableAlias(this=q.ident("u"))))
    store.execute("CREATE OR REPLACE TEMP TABLE _ms_crm_attrs AS " + q.render(select))
    n = int(store.scalar("SELECT count(*) FROM _ms_crm_attrs"))
    _replace_rows(store, "profile_attributes", "SELECT * FROM _ms_crm_attrs")
    store.execute("DROP TABLE IF EXISTS _ms_crm_attrs")
    _write_match_keys(
        store,
        settings,
        [c for c in plain if c.attribute in settings.identity.probabilistic.fields],
        source,
        now,
    )
    return n


def _write_pii(
    store: Store, settings: ProjectSettings, planned: list[_Column], source: str, now: datetime
) -> int:
    """PII: ciphertext + token in the vault; match keys for probabilistic fields."""
    total = 0
    for c in (
        c for c in planned if c.kind == "pii" or (c.kind == "identity" and c.attribute == "email")
    ):
        if c.attribute not in settings.privacy.pii_attributes:
            continue
        _replace_rows(
            store,
            "pii_vault",
            "SELECT profile_id, ? AS field, "
            + _quoted(c.alias + "_x")
            + " AS ciphertext, "
            + _quoted(c.alias + "_t")
            + " AS token, ? AS updated_at FROM _ms_crm_valid WHERE "
            + _quoted(c.alias)
            + " IS NOT NULL",
            [c.attribute, now],
        )
        total += int(
            store.scalar(
                "SELECT count(*) FROM _ms_crm_valid WHERE " + _quoted(c.alias) + " IS NOT NULL"
            )
        )
    fields = settings.identity.probabilistic.fields
    _write_match_keys(
        store,
        settings,
        [c for c in planned if c.kind == "pii" and c.attribute in fields],
        source,
        now,
    )
    return total


_KEYS = {
    "profile_attributes": ("profile_id", "name"),
    "pii_vault": ("profile_id", "field"),
    "match_keys": ("profile_id", "field", "kind"),
}


def _replace_rows(store: Store, table: str, select: str, params: list[Any] | None = None) -> None:
    """Upsert the rows of ``select`` (fixed SQL of this module) into ``table`` by primary key.

    DuckDB's INSERT OR REPLACE is slow on large conflicting batches; deleting the old rows in
    rowid order and inserting the new ones is ~5x faster. One row per key wins."""
    keys = ", ".join(_KEYS[table])
    on = " AND ".join(f"t.{k} = u.{k}" for k in _KEYS[table])
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_upsert AS SELECT * FROM (" + select + ") u"
        " QUALIFY row_number() OVER (PARTITION BY " + keys + ") = 1",
        params,
    )
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_del AS SELECT t.rowid AS rid FROM " + table + " t"
        " JOIN _ms_upsert u ON " + on + " ORDER BY rid"
    )
    store.execute("DELETE FROM " + table + " WHERE rowid IN (SELECT rid FROM _ms_del)")
    store.execute("INSERT INTO " + table + " SELECT * FROM _ms_upsert")
    store.execute("DROP TABLE IF EXISTS _ms_del")
    store.execute("DROP TABLE IF EXISTS _ms_upsert")


def _quoted(alias: str) -> str:
    # Stage aliases are generated by this module (_id, _c0, _c1, ...), never user text.
    assert re.fullmatch(r"_(id|c\d+)(_[tpx])?", alias), alias
    return '"' + alias + '"'


def _write_match_keys(
    store: Store, settings: ProjectSettings, cols: list[_Column], source: str, now: datetime
) -> None:
    for c in cols:
        kinds = [("exact", c.alias + "_t")]
        if c.attribute in NAME_LIKE_FIELDS:
            kinds.append(("phonetic", c.alias + "_p"))
        # a new value replaces all match keys of the field (also a phonetic key it lacks)
        store.execute(
            "CREATE OR REPLACE TEMP TABLE _ms_del AS SELECT m.rowid AS rid FROM match_keys m"
            " WHERE m.field = ? AND m.profile_id IN (SELECT profile_id FROM _ms_crm_valid WHERE "
            + _quoted(c.alias)
            + " IS NOT NULL) ORDER BY rid",
            [c.attribute],
        )
        store.execute("DELETE FROM match_keys WHERE rowid IN (SELECT rid FROM _ms_del)")
        store.execute("DROP TABLE IF EXISTS _ms_del")
        for kind, column in kinds:
            _replace_rows(
                store,
                "match_keys",
                "SELECT profile_id, ? AS field, ? AS kind, "
                + _quoted(column)
                + " AS token, ? AS source, ? AS updated_at FROM _ms_crm_valid WHERE "
                + _quoted(column)
                + " IS NOT NULL",
                [c.attribute, kind, source, now],
            )
