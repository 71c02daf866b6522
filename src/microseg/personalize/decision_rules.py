"""Decision rule definitions: ``decisions/*.yaml`` placements with ordered, prioritised rules.

A project keeps its placements in ``decisions/*.yaml``::

    placements:
      home_hero:
        description: Hero banner on the home page
        fallback: generic_hero            # block served when no rule applies (and to control)
        rules:
          - name: cart_nudge
            priority: 10                  # higher first; ties keep file order
            when:
              in: [cart_abandoners_24h]   # member of every listed segment
              not_in: [holdout]           # member of none
              traits:
                - {trait: ltv, op: ">=", value: 100}
              did:
                - {event: add_to_cart, within: 24h, where: {category: shoes}}
              did_not:
                - {event: purchase, within: 24h}
            serve: {block: cart_reminder, variant: web}   # or just: cart_reminder
            consent: marketing            # rule skipped unless the purpose is granted
            cap: {max: 3, per: 1d}        # impressions per profile (scope: rule | block)
            control: 10                   # percent held out (sticky), served the fallback

Names are lower_snake_case; segments, blocks, variants, event types and their properties are
checked against the project (with "did you mean"), and every problem carries file and line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlglot import exp

from microseg.config.models import CORE_EVENT_COLUMNS, check_name
from microseg.config.yamlio import Document, load_document, validate_model
from microseg.errors import DefinitionError, Problem, did_you_mean
from microseg.segments.ast import parse_duration
from microseg.store import Store
from microseg.store.sql import col
from microseg.store.sql import table as sql_table

DECISIONS_GLOB = "decisions/*.yaml"
Op = Literal["==", "!=", ">", ">=", "<", "<=", "in", "not_in", "exists", "missing"]
Scalar = bool | int | float | str
MAX_WITHIN = timedelta(days=90)
"""Longest ``within`` a did / did-not condition may use (bounds the in-memory lookback)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraitCondition(_Strict):
    """A comparison on a serving-state trait, e.g. ``{trait: ltv, op: ">=", value: 100}``."""

    trait: str
    op: Op = "=="
    value: Scalar | list[Scalar] | None = None

    @field_validator("trait")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "trait")

    @model_validator(mode="after")
    def _value(self) -> TraitCondition:
        if self.op in {"exists", "missing"}:
            if self.value is not None:
                raise ValueError(f"op '{self.op}' takes no value")
        elif self.op in {"in", "not_in"}:
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"op '{self.op}' needs a non-empty list value")
        elif self.value is None or isinstance(self.value, list):
            raise ValueError(f"op '{self.op}' needs a single value")
        elif self.op in {">", ">=", "<", "<="} and isinstance(self.value, bool):
            raise ValueError(f"op '{self.op}' needs a number or a string, not a boolean")
        return self

    def describe(self) -> str:
        if self.op in {"exists", "missing"}:
            return f"trait {self.trait} {self.op}"
        return f"trait {self.trait} {self.op} {self.value!r}"


class EventCondition(_Strict):
    """``did`` / ``did_not``: an event of a type (with property filters) within a duration."""

    event: str
    within: str
    where: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)

    @field_validator("event")
    @classmethod
    def _event(cls, value: str) -> str:
        return check_name(value, "event type")

    @field_validator("within")
    @classmethod
    def _within(cls, value: str) -> str:
        if parse_duration(value) > MAX_WITHIN:
            raise ValueError(f"within '{value}' is longer than the 90 days kept in memory")
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: dict[str, Any]) -> dict[str, Any]:
        for prop, wanted in value.items():
            check_name(prop, "property")
            if isinstance(wanted, list) and not wanted:
                raise ValueError(f"where '{prop}' needs at least one value")
        return value

    @property
    def window(self) -> timedelta:
        return parse_duration(self.within)

    def describe(self, negated: bool) -> str:
        where = "".join(f" {k}={v!r}" for k, v in self.where.items())
        return f"{'did not' if negated else 'did'} {self.event}{where} within {self.within}"


class When(_Strict):
    """All listed conditions must hold (an empty ``when`` always holds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    in_: list[str] = Field(default_factory=list, alias="in")
    not_in: list[str] = Field(default_factory=list)
    traits: list[TraitCondition] = Field(default_factory=list)
    did: list[EventCondition] = Field(default_factory=list)
    did_not: list[EventCondition] = Field(default_factory=list)

    @field_validator("in_", "not_in")
    @classmethod
    def _segments(cls, value: list[str]) -> list[str]:
        for name in value:
            check_name(name, "segment")
        return value


class Serve(_Strict):
    """A content block, optionally pinned to one of its variants."""

    block: str
    variant: str | None = None

    @field_validator("block")
    @classmethod
    def _block(cls, value: str) -> str:
        return check_name(value, "block name")

    @field_validator("variant")
    @classmethod
    def _variant(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "variant id")


def _serve_shorthand(value: Any) -> Any:
    return {"block": value} if isinstance(value, str) else value


class Cap(_Strict):
    """At most ``max`` impressions per profile per ``per`` window, counted per rule or block."""

    max: int = Field(gt=0, le=10_000)
    per: str
    scope: Literal["rule", "block"] = "rule"

    @field_validator("per")
    @classmethod
    def _per(cls, value: str) -> str:
        if parse_duration(value) > MAX_WITHIN:
            raise ValueError(f"cap window '{value}' is longer than 90 days")
        return value

    @property
    def window(self) -> timedelta:
        return parse_duration(self.per)


class Rule(_Strict):
    """One rule of a placement."""

    name: str
    priority: int = 0
    description: str | None = None
    when: When = Field(default_factory=When)
    serve: Serve
    consent: str | None = None
    cap: Cap | None = None
    control: float = Field(default=0, ge=0, le=100, description="percent held out (sticky)")

    _serve = field_validator("serve", mode="before")(_serve_shorthand)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "rule name")

    @field_validator("consent")
    @classmethod
    def _consent(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, "consent purpose")


class Placement(_Strict):
    """A slot on a page or in a message: rules in priority order plus a fallback block."""

    description: str | None = None
    fallback: Serve
    rules: list[Rule] = Field(default_factory=list)

    _fallback = field_validator("fallback", mode="before")(_serve_shorthand)

    @model_validator(mode="after")
    def _unique(self) -> Placement:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"duplicate rule name '{rule.name}'")
            seen.add(rule.name)
        return self

    def ordered(self) -> list[Rule]:
        """Rules by descending priority; equal priorities keep their file order."""
        return sorted(self.rules, key=lambda r: -r.priority)


class DecisionsFile(_Strict):
    """A ``decisions/*.yaml`` file."""

    placements: dict[str, Placement]

    @field_validator("placements")
    @classmethod
    def _names(cls, value: dict[str, Placement]) -> dict[str, Placement]:
        for name in value:
            check_name(name, "placement name")
        return value


# -- references ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Known:
    """Names a decisions file may reference; ``None`` means "not known here, do not check"."""

    segments: frozenset[str] | None = None
    blocks: Mapping[str, frozenset[str]] | None = None  # block -> variant ids
    events: Mapping[str, frozenset[str]] | None = None  # event type -> property names
    traits: frozenset[str] | None = None
    purposes: frozenset[str] | None = None  # declared consent purposes


def _check_refs(doc: Document, parsed: DecisionsFile, known: Known) -> list[Problem]:
    problems: list[Problem] = []
    readable = frozenset(CORE_EVENT_COLUMNS)

    def serve(s: Serve, loc: tuple[str | int, ...]) -> None:
        if known.blocks is None:
            return
        if s.block not in known.blocks:
            msg = f"unknown content block '{s.block}'{did_you_mean(s.block, known.blocks)}"
            problems.append(
                doc.problem(msg, (*loc, "block") if isinstance(doc_get(doc, loc), dict) else loc)
            )
        elif s.variant is not None and s.variant not in known.blocks[s.block]:
            variants = known.blocks[s.block]
            msg = (
                f"block '{s.block}' has no variant '{s.variant}'"
                f"{did_you_mean(s.variant, variants)} (has: {', '.join(sorted(variants))})"
            )
            problems.append(doc.problem(msg, (*loc, "variant")))

    for pname, placement in parsed.placements.items():
        base: tuple[str | int, ...] = ("placements", pname)
        serve(placement.fallback, (*base, "fallback"))
        for i, rule in enumerate(placement.rules):
            rloc = (*base, "rules", i)
            serve(rule.serve, (*rloc, "serve"))
            if rule.consent and known.purposes and rule.consent not in known.purposes:
                msg = (
                    f"unknown consent purpose '{rule.consent}'"
                    f"{did_you_mean(rule.consent, known.purposes)}"
                    f" (declared: {', '.join(sorted(known.purposes))})"
                )
                problems.append(doc.problem(msg, (*rloc, "consent")))
            when = rule.when
            if known.segments is not None:
                for key, names in (("in", when.in_), ("not_in", when.not_in)):
                    for j, seg in enumerate(names):
                        if seg not in known.segments:
                            msg = f"unknown segment '{seg}'{did_you_mean(seg, known.segments)}"
                            problems.append(doc.problem(msg, (*rloc, "when", key, j)))
            if known.traits is not None:
                for j, cond in enumerate(when.traits):
                    if cond.trait not in known.traits:
                        msg = (
                            f"unknown trait '{cond.trait}'{did_you_mean(cond.trait, known.traits)}"
                        )
                        problems.append(doc.problem(msg, (*rloc, "when", "traits", j, "trait")))
            if known.events is not None:
                for key, conds in (("did", when.did), ("did_not", when.did_not)):
                    for j, ev in enumerate(conds):
                        cloc = (*rloc, "when", key, j)
                        if ev.event not in known.events:
                            msg = f"unknown event type '{ev.event}'{did_you_mean(ev.event, known.events)}"
                            problems.append(doc.problem(msg, (*cloc, "event")))
                            continue
                        props = known.events[ev.event] | readable
                        for prop in ev.where:
                            if prop not in props:
                                msg = (
                                    f"event '{ev.event}' has no property '{prop}'"
                                    f"{did_you_mean(prop, props)}"
                                )
                                problems.append(doc.problem(msg, (*cloc, "where", prop)))
    return problems


def doc_get(doc: Document, loc: tuple[str | int, ...]) -> Any:
    """The raw value at ``loc`` of a document (None when absent)."""
    data = doc.data
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _located(doc: Document) -> list[Problem]:
    """Duplicate rule names pointing at the second definition (before schema validation)."""
    problems: list[Problem] = []
    placements = doc.data.get("placements") if isinstance(doc.data, dict) else None
    if not isinstance(placements, dict):
        return problems
    for pname, body in placements.items():
        rules = body.get("rules") if isinstance(body, dict) else None
        seen: set[Any] = set()
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            name = rule.get("name") if isinstance(rule, dict) else None
            if name is not None and name in seen:
                msg = f"duplicate rule name '{name}' in placement '{pname}'"
                problems.append(doc.problem(msg, ("placements", pname, "rules", i, "name")))
            seen.add(name)
    return problems


def _validate_file(doc: Document) -> DecisionsFile:
    """Schema validation placement by placement, so unknown fields get "did you mean"."""
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("placements"), dict):
        return validate_model(DecisionsFile, doc)  # reports the shape problem
    problems: list[Problem] = []
    for key in data:
        if key != "placements":
            problems.append(
                doc.problem(
                    f"unknown field '{key}'{did_you_mean(str(key), ['placements'])}", (key,)
                )
            )
    placements: dict[str, Placement] = {}
    for name in data["placements"]:
        loc = ("placements", name)
        try:
            check_name(str(name), "placement name")
            placements[str(name)] = validate_model(Placement, doc, loc)
        except ValueError as exc:
            problems.append(doc.problem(str(exc), loc))
        except DefinitionError as exc:
            problems.extend(exc.problems)
    if problems:
        raise DefinitionError(problems)
    return DecisionsFile(placements=placements)


def parse_decisions_document(doc: Document, known: Known | None = None) -> DecisionsFile:
    """Validate one parsed decisions file against the schema and (optionally) known names."""
    if doc.data is None:
        raise DefinitionError(
            Problem("decisions file is empty; expected 'placements:'", doc.file, 1)
        )
    located = _located(doc)
    if located:
        raise DefinitionError(located)
    parsed = _validate_file(doc)
    problems = _check_refs(doc, parsed, known or Known())
    if problems:
        raise DefinitionError(problems)
    return parsed


# -- the project ---------------------------------------------------------------------------------
def project_decision_files(root: str | Path) -> list[Path]:
    return sorted(Path(root).glob(DECISIONS_GLOB))


def project_known(project: Any, *, blocks: Mapping[str, frozenset[str]] | None = None) -> Known:
    """Segments (segment files), blocks (content files) and event types (taxonomy) of a project.

    Blocks given explicitly (e.g. from the content store) are added to those of the files."""
    from microseg.personalize.content import load_project_content
    from microseg.segments.parse import load_segment, project_segment_files

    root = getattr(project, "root", None)
    segments: set[str] | None = None
    found_blocks: dict[str, frozenset[str]] | None = dict(blocks) if blocks is not None else None
    if root is not None:
        segments = set()
        for path in project_segment_files(root):
            try:
                segments.add(load_segment(path).name)
            except DefinitionError:
                segments.add(path.stem)  # broken file: reported by its own validator
        try:
            content = load_project_content(root)
        except DefinitionError:
            content = None  # broken content: its validator reports it; do not guess here
        if content is not None:
            found_blocks = found_blocks or {}
            for block in content:
                found_blocks.setdefault(block.name, frozenset(v.id for v in block.spec.variants))
    settings = getattr(project, "settings", None)
    events = None
    if (
        settings is not None
        and settings.taxonomy.events
        and not settings.taxonomy.allow_unknown_events
    ):
        events = {n: frozenset(s.properties) for n, s in settings.taxonomy.events.items()}
    privacy = getattr(settings, "privacy", None)
    purposes = frozenset(getattr(privacy, "purposes", None) or ()) or None
    return Known(
        frozenset(segments) if segments is not None else None,
        found_blocks,
        events,
        None,
        purposes,
    )


def validate_decisions_document(doc: Document, project: Any = None) -> DecisionsFile:
    """The one-validator hook for ``decisions/*.yaml``: shape, names, references."""
    known = project_known(project) if project is not None else Known()
    return parse_decisions_document(doc, known)


def load_decisions(paths: Iterable[str | Path], known: Known | None = None) -> dict[str, Placement]:
    """Every placement of several files; one DefinitionError lists the problems of all."""
    placements: dict[str, Placement] = {}
    origin: dict[str, str] = {}
    problems: list[Problem] = []
    for path in paths:
        try:
            doc = load_document(path)
            parsed = parse_decisions_document(doc, known)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        for name, placement in parsed.placements.items():
            if name in placements:
                problems.append(
                    doc.problem(
                        f"placement '{name}' is already defined in {origin[name]}",
                        ("placements", name),
                    )
                )
                continue
            placements[name] = placement
            origin[name] = doc.file
    if problems:
        raise DefinitionError(problems)
    return placements


# -- evaluation semantics and store names ----------------------------------------------------
def control_bucket(profile_id: str, placement: str, rule: str) -> float:
    """A sticky number in [0, 100) for a profile, placement and rule (uniform by hash)."""
    digest = hashlib.blake2b(f"{profile_id}|{placement}|{rule}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100


def trait_passes(cond: TraitCondition, value: Any) -> bool:
    """Compare a trait value; a missing value or incomparable types never pass (except
    ``missing`` / ``!=`` / ``not_in``)."""
    op = cond.op
    if op == "exists":
        return value is not None
    if op == "missing":
        return value is None
    if value is None:
        return op in {"!=", "not_in"}
    wanted = cond.value
    if op == "in":
        return isinstance(wanted, list) and value in wanted
    if op == "not_in":
        return isinstance(wanted, list) and value not in wanted
    if op == "==":
        return bool(value == wanted)
    if op == "!=":
        return bool(value != wanted)
    try:
        if op == ">":
            return bool(value > wanted)
        if op == ">=":
            return bool(value >= wanted)
        if op == "<":
            return bool(value < wanted)
        return bool(value <= wanted)
    except TypeError:
        return False


def stored_traits(store: Store | None) -> frozenset[str] | None:
    """Trait columns of the store (None when no traits are computed yet: not checked)."""
    if store is None or not store.table_exists("traits"):
        return None
    names = set(store.columns("traits")) - {"profile_id"}
    if store.table_exists("trait_catalog"):
        names |= {str(r[0]) for r in store.rows("SELECT name FROM trait_catalog")}
    return frozenset(names)


def stored_segments(store: Store | None) -> frozenset[str]:
    """Segment names the store knows (definitions and memberships), e.g. computed elsewhere."""
    names: set[str] = set()
    if store is None:
        return frozenset()
    for table, column in (("segments", "name"), ("memberships", "segment")):
        if store.table_exists(table) and column in store.columns(table):
            query = exp.select(exp.Distinct(expressions=[col(column)])).from_(sql_table(table))
            names |= {str(r[0]) for r in store.rows(query) if r[0] is not None}
    return frozenset(names)
