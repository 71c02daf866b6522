"""Content repository: blocks with per-channel/device variants, versions, tags and rendering.

A project keeps its content in ``content/*.yaml``::

    blocks:
      cart_reminder:
        description: Nudge for an abandoned cart
        tags: [cart, retention]
        placeholders:
          first_name: there          # shorthand for {default: there}
          abandoned_items: {default: []}
        fallback: {subject: "You left something behind", text: "Your cart is waiting."}
        variants:
          - id: email
            channel: email           # web | email | push
            device: any              # any | mobile | desktop
            subject: "{{ first_name }}, your cart is waiting"
            html: |
              <p>Hi {{ first_name }}</p>

Every change to a block stored with :meth:`ContentRepo.save` creates a new version; old
versions stay retrievable. Templates are checked at save/validate time (syntax and the
sandbox's static rules) and a failure points at the YAML file line of the template line.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from microseg.config.models import CORE_EVENT_COLUMNS, check_name
from microseg.config.yamlio import Document, parse_text, validate_model
from microseg.errors import DefinitionError, NotFoundError, Problem, did_you_mean, display_path
from microseg.personalize.templates import (
    TemplateCache,
    TemplateProblem,
    default_cache,
    escape_html,
    plain_context,
    render_template,
)
from microseg.privacy.audit import audit_pii_read
from microseg.privacy.crypto import KeyRing
from microseg.privacy.keys import decrypt_with, load_subject_keys
from microseg.store import Store
from microseg.store.duckdb_store import utcnow

ChannelName = Literal["web", "email", "push"]
DeviceName = Literal["any", "mobile", "desktop"]
CHANNELS: tuple[str, ...] = ("web", "email", "push")
DEVICES: tuple[str, ...] = ("any", "mobile", "desktop")
PARTS: tuple[str, ...] = ("subject", "title", "text", "html")
HTML_PARTS = frozenset({"html"})
PUSH_MAX_CHARS = 178
MAX_LIST_ITEMS = 50


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlaceholderSpec(_Strict):
    """A placeholder the templates use, with the value to show when the profile lacks it."""

    default: Any = ""
    description: str | None = None


class VariantSpec(_Strict):
    """One rendering of a block for a channel and device."""

    id: str
    channel: ChannelName
    device: DeviceName = "any"
    tags: list[str] = Field(default_factory=list)
    subject: str | None = None
    title: str | None = None
    text: str | None = None
    html: str | None = None
    max_chars: int | None = Field(default=None, gt=0, description="cap on the text part (push)")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_name(value, "variant id")

    @model_validator(mode="after")
    def _parts(self) -> VariantSpec:
        if self.channel == "email" and (
            self.subject is None or (self.text is None and self.html is None)
        ):
            raise ValueError("an email variant needs a subject and a text or html body")
        if self.channel == "push":
            if self.text is None:
                raise ValueError("a push variant needs a text body")
            if self.html is not None:
                raise ValueError("a push variant cannot have an html body")
        if self.channel == "web" and self.text is None and self.html is None:
            raise ValueError("a web variant needs an html or text body")
        if self.channel != "email" and self.subject is not None:
            raise ValueError(f"a {self.channel} variant has no subject (use title for push)")
        return self

    def parts(self) -> dict[str, str]:
        """Template source per part that this variant defines."""
        return {p: v for p in PARTS if (v := getattr(self, p)) is not None}


class BlockSpec(_Strict):
    """A content block: placeholders with defaults, variants, static fallback text."""

    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    placeholders: dict[str, PlaceholderSpec] = Field(default_factory=dict)
    fallback: dict[str, str] = Field(
        default_factory=dict, description="part -> static text used if a render fails"
    )
    variants: list[VariantSpec] = Field(min_length=1)

    @field_validator("placeholders", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: v
                if isinstance(v, dict) and set(v) <= {"default", "description"}
                else {"default": v}
                for k, v in value.items()
            }
        return value

    @field_validator("fallback")
    @classmethod
    def _fallback_parts(cls, value: dict[str, str]) -> dict[str, str]:
        for part in value:
            if part not in PARTS:
                raise ValueError(f"unknown fallback part '{part}'{did_you_mean(part, PARTS)}")
        return value

    @model_validator(mode="after")
    def _unique(self) -> BlockSpec:
        seen: set[str] = set()
        combos: set[tuple[str, str]] = set()
        for v in self.variants:
            if v.id in seen:
                raise ValueError(f"duplicate variant id '{v.id}'")
            if (v.channel, v.device) in combos:
                raise ValueError(f"two variants for channel '{v.channel}' and device '{v.device}'")
            seen.add(v.id)
            combos.add((v.channel, v.device))
        for name in self.placeholders:
            check_name(name, "placeholder")
        return self

    def checksum(self) -> str:
        """Stable hash of the definition (a change means a new version)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ContentFile(_Strict):
    """A ``content/*.yaml`` file."""

    blocks: dict[str, BlockSpec]

    @field_validator("blocks")
    @classmethod
    def _names(cls, value: dict[str, BlockSpec]) -> dict[str, BlockSpec]:
        for name in value:
            check_name(name, "block name")
        return value


@dataclass(frozen=True)
class ContentBlock:
    """A block as stored: name, version and definition."""

    name: str
    spec: BlockSpec
    version: int = 0
    source_file: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True)
class Rendered:
    """The result of rendering a block for one channel/device; never a broken message."""

    block: str
    version: int
    variant: str
    channel: str
    device: str
    parts: dict[str, str]
    ok: bool = True
    errors: tuple[str, ...] = ()
    defaults_used: tuple[str, ...] = ()

    @property
    def subject(self) -> str | None:
        return self.parts.get("subject")

    @property
    def title(self) -> str | None:
        return self.parts.get("title")

    @property
    def text(self) -> str | None:
        return self.parts.get("text")

    @property
    def html(self) -> str | None:
        return self.parts.get("html")

    @property
    def fallback_used(self) -> bool:
        return bool(self.errors)


# -- validation (with YAML line mapping) -------------------------------------------------------
def _template_line(
    doc: Document, text: str | None, loc: tuple[str | int, ...], lineno: int | None
) -> int | None:
    """Map a template's 1-based line to the YAML file line."""
    key_line, _ = doc.locate(loc)
    if key_line is None:
        return None
    offset = (lineno or 1) - 1
    if text is not None:
        lines = text.splitlines()
        if 0 < key_line <= len(lines):
            after = lines[key_line - 1].split(":", 1)[-1].strip()
            if after[:1] in {"|", ">"}:
                return key_line + 1 + offset
    return key_line + offset


def check_block_templates(
    name: str,
    spec: BlockSpec,
    *,
    doc: Document | None = None,
    text: str | None = None,
    cache: TemplateCache | None = None,
) -> list[Problem]:
    """Compile every template of a block (filling the cache); problems carry file lines."""
    cache = cache if cache is not None else default_cache()
    problems: list[Problem] = []
    for i, variant in enumerate(spec.variants):
        for part, source in variant.parts().items():
            try:
                cache.get(source, html=part in HTML_PARTS)
            except TemplateProblem as exc:
                loc: tuple[str | int, ...] = ("blocks", name, "variants", i, part)
                msg = f"{exc.message} (template line {exc.lineno})" if exc.lineno else exc.message
                if doc is None:
                    problems.append(Problem(msg, path=".".join(map(str, loc[1:]))))
                else:
                    line = _template_line(doc, text, loc, exc.lineno)
                    problems.append(Problem(msg, doc.file, line, None, ".".join(map(str, loc))))
    return problems


def _located_problems(doc: Document) -> list[Problem]:
    """Name and uniqueness checks pointing at the exact entry (before schema validation)."""
    problems: list[Problem] = []
    blocks = doc.data.get("blocks") if isinstance(doc.data, dict) else None
    if not isinstance(blocks, dict):
        return problems
    for name, body in blocks.items():
        try:
            check_name(str(name), "block name")
        except ValueError as exc:
            problems.append(doc.problem(str(exc), ("blocks", name)))
        variants = body.get("variants") if isinstance(body, dict) else None
        seen: set[Any] = set()
        for i, variant in enumerate(variants if isinstance(variants, list) else []):
            vid = variant.get("id") if isinstance(variant, dict) else None
            if vid is not None and vid in seen:
                problems.append(
                    doc.problem(
                        f"duplicate variant id '{vid}'", ("blocks", name, "variants", i, "id")
                    )
                )
            seen.add(vid)
    return problems


def validate_content_document(
    doc: Document, project: object = None, *, text: str | None = None
) -> ContentFile:
    """Validate one parsed ``content/*.yaml`` (usable as a project validator)."""
    if text is None:
        try:
            text = Path(doc.file).read_text(encoding="utf-8")
        except OSError:
            text = None
    if doc.data is None:
        raise DefinitionError(Problem("content file is empty; expected 'blocks:'", doc.file, 1))
    located = _located_problems(doc)
    if located:
        raise DefinitionError(located)
    parsed = validate_model(ContentFile, doc)
    problems: list[Problem] = []
    for name, spec in parsed.blocks.items():
        problems.extend(check_block_templates(name, spec, doc=doc, text=text))
    if problems:
        raise DefinitionError(problems)
    return parsed


def parse_content(text: str, file: str = "<content>") -> ContentFile:
    """Parse and validate content YAML text."""
    return validate_content_document(parse_text(text, file), text=text)


def load_project_content(root: str | Path) -> list[ContentBlock]:
    """Every block of ``<root>/content/*.yaml|yml``; all problems of all files in one error."""
    folder = Path(root) / "content"
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]) if folder.is_dir() else []
    problems: list[Problem] = []
    blocks: dict[str, ContentBlock] = {}
    for path in files:
        shown = display_path(path)
        try:
            text = path.read_text(encoding="utf-8")
            doc = parse_text(text, shown)
            parsed = validate_content_document(doc, text=text)
        except UnicodeDecodeError:
            problems.append(Problem("file is not valid UTF-8", shown))
            continue
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        for name, spec in parsed.blocks.items():
            if name in blocks:
                line, col = doc.locate(("blocks", name))
                first = blocks[name].source_file
                problems.append(
                    Problem(f"block '{name}' is already defined in {first}", shown, line, col)
                )
                continue
            blocks[name] = ContentBlock(name, spec, 0, shown)
    if problems:
        raise DefinitionError(problems)
    return list(blocks.values())


# -- repository ---------------------------------------------------------------------------------
class ContentRepo:
    """Versioned content blocks in the store (table ``content_versions``)."""

    def __init__(self, store: Store, *, cache: TemplateCache | None = None) -> None:
        self.store = store
        self.cache = cache if cache is not None else default_cache()
        self._versions: dict[tuple[str, int], ContentBlock] = {}
        self._lock = threading.Lock()

    def save(
        self,
        name: str,
        spec: BlockSpec,
        *,
        source_file: str | None = None,
        actor: str = "library",
    ) -> int:
        """Store a block; returns its version (a new one only if the definition changed)."""
        check_name(name, "block name")
        problems = check_block_templates(name, spec, cache=self.cache)
        if problems:
            raise DefinitionError(
                [Problem(p.message, source_file, None, None, p.path) for p in problems]
            )
        checksum = spec.checksum()
        with self.store.transaction():
            row = self.store.rows(
                "SELECT version, checksum FROM content_versions WHERE block = ? ORDER BY version DESC LIMIT 1",
                [name],
            )
            if row and row[0][1] == checksum:
                return int(row[0][0])
            version = int(row[0][0]) + 1 if row else 1
            self.store.execute(
                "INSERT INTO content_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name,
                    version,
                    checksum,
                    json.dumps(spec.model_dump(mode="json")),
                    json.dumps(spec.tags),
                    source_file,
                    utcnow(),
                    actor,
                ],
            )
            self.store.audit(
                actor, "content.save", name, {"version": version, "checksum": checksum[:12]}
            )
        return version

    def sync(
        self, blocks: Iterable[ContentBlock], *, actor: str = "library"
    ) -> dict[str, tuple[int, bool]]:
        """Save every block; returns name -> (version, changed)."""
        out: dict[str, tuple[int, bool]] = {}
        for block in blocks:
            before = self.latest_version(block.name)
            version = self.save(block.name, block.spec, source_file=block.source_file, actor=actor)
            out[block.name] = (version, version != before)
        return out

    def sync_project(
        self, root: str | Path, *, actor: str = "library"
    ) -> dict[str, tuple[int, bool]]:
        """Validate ``content/*.yaml`` of a project and store what changed."""
        return self.sync(load_project_content(root), actor=actor)

    def latest_version(self, name: str) -> int:
        return int(
            self.store.scalar("SELECT max(version) FROM content_versions WHERE block = ?", [name])
            or 0
        )

    def names(self) -> list[str]:
        return [
            str(r[0])
            for r in self.store.rows("SELECT DISTINCT block FROM content_versions ORDER BY 1")
        ]

    def get(self, name: str, version: int | None = None) -> ContentBlock:
        """A block at ``version`` (default: latest). Versions are immutable, so cached."""
        if version is None:
            version = self.latest_version(name)
            if version == 0:
                raise NotFoundError(f"no content block '{name}'{did_you_mean(name, self.names())}")
        found = self._versions.get((name, version))
        if found is not None:
            return found
        rows = self.store.rows(
            "SELECT definition, source_file, created_at FROM content_versions WHERE block = ? AND version = ?",
            [name, version],
        )
        if not rows:
            latest = self.latest_version(name)
            if latest == 0:
                raise NotFoundError(f"no content block '{name}'{did_you_mean(name, self.names())}")
            raise NotFoundError(f"block '{name}' has no version {version} (latest is {latest})")
        definition, source_file, created_at = rows[0]
        block = ContentBlock(
            name, BlockSpec.model_validate(json.loads(definition)), version, source_file, created_at
        )
        with self._lock:
            self._versions[(name, version)] = block
        return block

    def latest(self, tags: Sequence[str] = ()) -> dict[str, ContentBlock]:
        """Latest version of every block (optionally only those carrying all ``tags``)."""
        out = {}
        for name in self.names():
            block = self.get(name)
            if all(t in block.spec.tags for t in tags):
                out[name] = block
        return out

    def history(self, name: str) -> pd.DataFrame:
        """Every version of a block, newest first."""
        df = self.store.df(
            "SELECT version, checksum, created_at, created_by, source_file, tags FROM content_versions"
            " WHERE block = ? ORDER BY version DESC",
            [name],
        )
        if df.empty:
            raise NotFoundError(f"no content block '{name}'{did_you_mean(name, self.names())}")
        return df

    def list(self) -> pd.DataFrame:
        """One row per block: latest version, tags, channels/devices, description."""
        rows = []
        for name, block in self.latest().items():
            rows.append(
                {
                    "block": name,
                    "version": block.version,
                    "tags": ",".join(block.spec.tags),
                    "variants": ",".join(f"{v.channel}/{v.device}" for v in block.spec.variants),
                    "description": block.spec.description or "",
                    "updated_at": block.created_at,
                }
            )
        return pd.DataFrame(
            rows, columns=["block", "version", "tags", "variants", "description", "updated_at"]
        )


# -- rendering ----------------------------------------------------------------------------------
def select_variant(spec: BlockSpec, channel: str, device: str = "any") -> VariantSpec:
    """Best variant for a channel and device: exact device, then ``any``, then any device."""
    candidates = [v for v in spec.variants if v.channel == channel]
    if not candidates:
        have = sorted({v.channel for v in spec.variants})
        raise NotFoundError(f"no variant for channel '{channel}' (has: {', '.join(have)})")
    for wanted in (device, "any"):
        for v in candidates:
            if v.device == wanted:
                return v
    # mobile asked but only desktop defined (or the reverse): better than nothing
    return candidates[0]


def prepare_context(
    spec: BlockSpec, context: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Fill declared placeholders with defaults where missing/None; cap long lists."""
    ctx: dict[str, Any] = {}
    for key, value in context.items():
        if isinstance(value, (list, tuple)) and len(value) > MAX_LIST_ITEMS:
            value = list(value[:MAX_LIST_ITEMS])
        ctx[key] = value
    used = []
    for name, ph in spec.placeholders.items():
        value = ctx.get(name)
        if value is None or value == "" or (isinstance(value, (list, dict)) and not value):
            ctx[name] = ph.default
            used.append(name)
    return ctx, used


def render_block(
    block: ContentBlock | BlockSpec,
    context: Mapping[str, Any],
    *,
    channel: str = "web",
    device: str = "any",
    cache: TemplateCache | None = None,
) -> Rendered:
    """Render a block for a channel/device. Failures use the block's fallback text."""
    cache = cache if cache is not None else default_cache()
    if isinstance(block, BlockSpec):
        block = ContentBlock("<inline>", block)
    spec = block.spec
    variant = select_variant(spec, channel, device)
    ctx, used = prepare_context(spec, context)
    ctx = plain_context(ctx)
    parts: dict[str, str] = {}
    errors: list[str] = []
    for part, source in variant.parts().items():
        html = part in HTML_PARTS
        fallback = spec.fallback.get(part, "")
        if not fallback and html and "text" in spec.fallback:
            fallback = spec.fallback["text"]
        fallback = escape_html(fallback) if html else fallback
        try:
            template = cache.get(source, html=html)
        except TemplateProblem as exc:  # only for specs that bypassed validation
            parts[part] = fallback
            errors.append(f"{part}: {exc.message}")
            continue
        result = render_template(template, ctx, fallback=fallback, plain=True)
        text = result.text
        if part == "text" and variant.channel == "push":
            limit = variant.max_chars or PUSH_MAX_CHARS
            text = text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
        elif part == "text" and variant.max_chars and len(text) > variant.max_chars:
            text = text[: variant.max_chars - 1].rstrip() + "…"
        if part in {"subject", "title"}:
            text = " ".join(text.split())
        parts[part] = text
        if not result.ok:
            errors.append(f"{part}: {result.error}")
    return Rendered(
        block.name,
        block.version,
        variant.id,
        variant.channel,
        device,
        parts,
        not errors,
        tuple(errors),
        tuple(used),
    )


# -- profile data -------------------------------------------------------------------------------
def pii_context(profile_id: str, field: str) -> str:
    """The associated-data string PII ciphertexts are bound to (one place, shared with ingest)."""
    return f"{profile_id}|{field}"


def read_pii(
    store: Store,
    keys: KeyRing,
    profile_id: str,
    fields: Sequence[str],
    *,
    actor: str = "library",
) -> dict[str, str]:
    """Decrypt the requested PII fields of one profile (missing fields are left out).

    Each call is audited (``pii.decrypt``); ciphertexts are under the profile's own key."""
    if not fields:
        return {}
    rows = store.rows(
        "SELECT field, ciphertext FROM pii_vault WHERE profile_id = ? AND list_contains(?, field)",
        [profile_id, list(fields)],
    )
    if not rows:
        return {}
    dek = load_subject_keys(store, keys, [profile_id]).get(profile_id)
    out = {
        str(f): decrypt_with(keys, dek, bytes(blob), pii_context(profile_id, str(f)))
        for f, blob in rows
    }
    audit_pii_read(store, actor, [profile_id], sorted(out))
    return out


def read_pii_many(
    store: Store,
    keys: KeyRing,
    profile_ids: Sequence[str],
    field: str,
    *,
    actor: str = "library",
) -> dict[str, str]:
    """Decrypt one PII field for many profiles: profile id -> value (one audit row)."""
    rows = store.rows(
        "SELECT profile_id, ciphertext FROM pii_vault WHERE field = ? AND list_contains(?, profile_id)",
        [field, list(profile_ids)],
    )
    if not rows:
        return {}
    deks = load_subject_keys(store, keys, [str(p) for p, _ in rows])
    out = {
        str(p): decrypt_with(keys, deks.get(str(p)), bytes(blob), pii_context(str(p), field))
        for p, blob in rows
    }
    audit_pii_read(store, actor, sorted(out), [field])
    return out


PURCHASE_EVENTS = ("purchase", "checkout_completed", "order_completed")
CART_EVENTS = ("add_to_cart",)
# Bookkeeping columns never shown in templates; event_type and ts stay (templates use them).
_INTERNAL_EVENT_COLUMNS = frozenset(CORE_EVENT_COLUMNS) - {"event_type", "ts"}


def _event_record(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if (
            key in _INTERNAL_EVENT_COLUMNS
            or value is None
            or (isinstance(value, float) and value != value)
        ):
            continue
        out[key] = value.to_pydatetime() if isinstance(value, pd.Timestamp) else value
    return out


def _coerce(value: str | None, value_num: float | None) -> Any:
    if value is None:
        return value_num
    try:
        return date.fromisoformat(value) if len(value) == 10 and value[4] == "-" else value
    except ValueError:
        return value


@dataclass
class ProfileContextLoader:
    """Builds the template context of a profile: attributes, PII, traits, last purchase, cart."""

    store: Store
    keys: KeyRing | None = None
    pii_fields: tuple[str, ...] = ("first_name", "last_name", "email")
    max_items: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self, profile_id: str, *, as_of: datetime | None = None) -> dict[str, Any]:
        """Context for ``profile_id`` (events up to ``as_of``, default now)."""
        as_of = as_of or utcnow()
        ctx: dict[str, Any] = {"profile_id": profile_id}
        for name, value, value_num in self.store.rows(
            "SELECT name, value, value_num FROM profile_attributes WHERE profile_id = ?",
            [profile_id],
        ):
            ctx[str(name)] = _coerce(value, value_num)
        if "location" not in ctx and "city" in ctx:
            ctx["location"] = ctx["city"]
        if self.store.table_exists("traits"):
            df = self.store.df("SELECT * FROM traits WHERE profile_id = ?", [profile_id])
            if not df.empty:
                for key, value in _event_record(df.iloc[0].to_dict()).items():
                    ctx.setdefault(key, value)
        if self.keys is not None:
            ctx.update(read_pii(self.store, self.keys, profile_id, self.pii_fields))
        purchases = self._events(profile_id, PURCHASE_EVENTS, as_of, None, 1)
        if purchases:
            ctx["last_purchase"] = purchases[0]
        since = purchases[0]["ts"] if purchases else None
        cart = self._events(profile_id, CART_EVENTS, as_of, since, self.max_items)
        if cart:
            ctx["abandoned_items"] = cart
        ctx.update(self.extra)
        return ctx

    def _events(
        self,
        profile_id: str,
        types: Sequence[str],
        as_of: datetime,
        since: datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        df = self.store.df(
            "SELECT e.* FROM events e JOIN identities i ON i.id_key = e.id_key"
            " WHERE i.profile_id = ? AND list_contains(?, e.event_type) AND e.ts <= ?"
            " AND (CAST(? AS TIMESTAMP) IS NULL OR e.ts > CAST(? AS TIMESTAMP))"
            " ORDER BY e.ts DESC LIMIT ?",
            [profile_id, list(types), as_of, since, since, limit],
        )
        return [_event_record(r) for r in df.to_dict(orient="records")]
