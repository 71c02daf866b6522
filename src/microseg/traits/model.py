"""Typed trait definitions (traits.yaml) and their validation against the project taxonomy.

A traits file is a mapping with one key, ``traits``, holding a list of definitions. Each
definition has a ``name`` and a ``kind``; the kind selects the model below. Parsing is in two
steps: pydantic checks the shape of each item (file:line:column on error), then
``_Checker`` checks names against the taxonomy (unknown event types / properties get a
"did you mean"), and value expressions against the declared numeric properties.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlglot
from pydantic import Field, field_validator, model_validator
from sqlglot import exp
from sqlglot.errors import ParseError

from microseg.config.models import Strict, Taxonomy, check_name, check_regex
from microseg.config.yamlio import Document, Loc, validate_model
from microseg.errors import DefinitionError, Problem, did_you_mean
from microseg.store import naive_utc

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|h|d|w)\s*$")
DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
NUMERIC = ("integer", "number")
# Columns of the events table a trait may read besides declared properties.
CORE_READABLE = ("event_type", "session_id", "source", "device_id")


def parse_duration(text: str) -> timedelta:
    """'30d' -> 30 days; units m (minutes), h, d, w."""
    match = DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"duration '{text}' must look like 30d, 12h, 90m or 2w")
    return timedelta(**{DURATION_UNITS[match.group(2)]: float(match.group(1))})


# --------------------------------------------------------------------------- building blocks
class Window(Strict):
    """A time window relative to as_of (``last: 30d``) or absolute (``between: [a, b]``)."""

    last: str | None = None
    between: tuple[datetime, datetime] | None = None

    @model_validator(mode="after")
    def _one(self) -> Window:
        if (self.last is None) == (self.between is None):
            raise ValueError("a window needs exactly one of 'last' (e.g. 30d) or 'between'")
        if self.last is not None:
            parse_duration(self.last)
        if self.between is not None and self.between[0] >= self.between[1]:
            raise ValueError("window 'between' must be [start, end] with start < end")
        return self

    def bounds(self, as_of: datetime) -> tuple[datetime | None, datetime | None, bool]:
        """(lower, upper, lower_inclusive): last -> (as_of - d, None, False); between -> [a, b)."""
        if self.last is not None:
            return as_of - parse_duration(self.last), None, False
        assert self.between is not None
        start, end = (naive_utc(t) for t in self.between)
        return start, end, True


class Condition(Strict):
    """A test on one property value; several operators in one condition are AND-ed."""

    eq: str | int | float | bool | None = None
    ne: str | int | float | bool | None = None
    in_: list[str | int | float] | None = Field(default=None, alias="in")
    not_in: list[str | int | float] | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    like: str | None = Field(default=None, description="SQL LIKE pattern, % and _ wildcards")
    matches: str | None = Field(default=None, description="regular expression (partial match)")
    exists: bool | None = None

    @field_validator("matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return check_regex(value)

    @model_validator(mode="after")
    def _some(self) -> Condition:
        if not self.model_fields_set:
            raise ValueError("a condition needs at least one operator (eq, in, gt, like, ...)")
        return self

    def numeric_ops(self) -> list[str]:
        return [op for op in ("gt", "gte", "lt", "lte") if getattr(self, op) is not None]


def _conditions(value: Any) -> Any:
    """`where: {category: shoes}` / `{category: [a, b]}` shorthands -> Condition dicts."""
    if not isinstance(value, dict):
        return value
    out: dict[Any, Any] = {}
    for key, cond in value.items():
        if isinstance(cond, list):
            out[key] = {"in": cond}
        elif isinstance(cond, dict):
            out[key] = cond
        else:
            out[key] = {"eq": cond}
    return out


class Filtered(Strict):
    """Which events a definition reads: event types, property conditions, a window."""

    events: list[str] | None = Field(default=None, description="event types (default: all)")
    where: dict[str, Condition] = Field(default_factory=dict)
    window: Window | None = None

    @field_validator("where", mode="before")
    @classmethod
    def _where(cls, value: Any) -> Any:
        return _conditions(value)


class TraitBase(Filtered):
    name: str
    kind: str
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "trait name")


# --------------------------------------------------------------------------- trait kinds
class CountTrait(TraitBase):
    """Number of matching events."""

    kind: Literal["count"]


class AggregateTrait(TraitBase):
    """sum / avg / min / max of a property or of an arithmetic expression over properties."""

    kind: Literal["sum", "avg", "min", "max"]
    property: str | None = None
    expression: str | None = None

    @model_validator(mode="after")
    def _one(self) -> AggregateTrait:
        if (self.property is None) == (self.expression is None):
            raise ValueError(f"a {self.kind} trait needs exactly one of 'property' or 'expression'")
        return self

    def value_text(self) -> str:
        """The aggregated value as expression text (a bare property is an expression too)."""
        return self.expression if self.expression is not None else str(self.property)


class DistinctCountTrait(TraitBase):
    """Number of distinct non-null values of a property among matching events."""

    kind: Literal["distinct_count"]
    property: str


class FirstLastTrait(TraitBase):
    """Value of a property on the first / last matching event where it is set."""

    kind: Literal["first", "last"]
    property: str


class RecencyTrait(TraitBase):
    """Whole days since the last matching event, as of as_of."""

    kind: Literal["recency_days"]


class RfmSegment(Strict):
    """A named RFM cell: score ranges [min, max] (inclusive, 1-5) for r, f and m."""

    label: str
    r: tuple[int, int] = (1, 5)
    f: tuple[int, int] = (1, 5)
    m: tuple[int, int] = (1, 5)

    @model_validator(mode="after")
    def _ranges(self) -> RfmSegment:
        for axis in ("r", "f", "m"):
            lo, hi = getattr(self, axis)
            if not 1 <= lo <= hi <= 5:
                raise ValueError(
                    f"RFM segment '{self.label}': {axis} must be [min, max] within 1..5"
                )
        return self


DEFAULT_RFM_SEGMENTS: tuple[RfmSegment, ...] = (
    RfmSegment(label="Champions", r=(4, 5), f=(4, 5), m=(4, 5)),
    RfmSegment(label="Loyal", r=(3, 5), f=(4, 5)),
    RfmSegment(label="New", r=(4, 5), f=(1, 2)),
    RfmSegment(label="Potential Loyalist", r=(4, 5), f=(3, 3)),
    RfmSegment(label="At Risk", r=(1, 2), f=(3, 5)),
    RfmSegment(label="Hibernating", r=(1, 2), f=(1, 2)),
    RfmSegment(label="Need Attention"),
)


class RfmTrait(TraitBase):
    """Recency / frequency / monetary with 1-5 quintile scores and a segment label.

    Scores are value-based quintiles over the profiles that have at least one matching
    event: score = ceil(5 * cume_dist) (ties share a score), recency ordered so that more
    recent scores higher. Segments are tried in order; the first whose ranges hold wins.
    """

    kind: Literal["rfm"]
    monetary: str = Field(description="expression of the money value of one event")
    frequency_of: str | None = Field(
        default=None, description="count distinct values of this property (e.g. order_id)"
    )
    segments: list[RfmSegment] = Field(default_factory=lambda: list(DEFAULT_RFM_SEGMENTS))


class ModeTrait(TraitBase):
    """Most frequent (or heaviest, with ``weight``) value of a property; ties -> smallest."""

    kind: Literal["dominant", "top"]
    property: str
    weight: str | None = Field(default=None, description="expression summed instead of counting")


class PreferredHourTrait(TraitBase):
    """Hour of day (0-23, UTC) with most matching events; ties -> earliest hour."""

    kind: Literal["preferred_hour"]


class EngagementLabels(Strict):
    """Thresholds on the score, or population quantiles (share of engaged profiles below)."""

    method: Literal["thresholds", "quantiles"] = "quantiles"
    highly_engaged: float = 0.8
    moderately_engaged: float = 0.5

    @model_validator(mode="after")
    def _order(self) -> EngagementLabels:
        if self.highly_engaged < self.moderately_engaged:
            raise ValueError("highly_engaged must be >= moderately_engaged")
        if self.method == "quantiles" and not (
            0 <= self.moderately_engaged <= 1 and 0 <= self.highly_engaged <= 1
        ):
            raise ValueError("quantile labels must lie between 0 and 1")
        return self


class EngagementTrait(TraitBase):
    """Sum over events of weight[event_type] * 0.5 ** (age_days / half_life_days), plus a label.

    Label: Highly Engaged / Moderately Engaged / Lurker (score 0 is always Lurker).
    """

    kind: Literal["engagement"]
    weights: dict[str, float]
    half_life_days: float = Field(default=14.0, gt=0)
    labels: EngagementLabels = Field(default_factory=EngagementLabels)

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("engagement needs at least one event type weight")
        return value


class TagRule(Filtered):
    """Events matching this rule count towards the tag ``Interest > Sub-interest``."""

    tag: str

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        parts = [p.strip() for p in value.split(">")]
        if not all(parts) or len(parts) > 4:
            raise ValueError(f"tag '{value}' must be 'Interest' or 'Interest > Sub-interest'")
        return " > ".join(parts)


class InterestTagsTrait(TraitBase):
    """List of tags whose rules matched at least ``min_count`` events; strongest ``cap`` kept."""

    kind: Literal["interest_tags"]
    rules: list[TagRule]
    min_count: int = Field(default=1, ge=1)
    cap: int = Field(default=5, ge=1)

    @field_validator("rules")
    @classmethod
    def _rules(cls, value: list[TagRule]) -> list[TagRule]:
        if not value:
            raise ValueError("interest_tags needs at least one rule")
        return value

    def tags(self) -> list[str]:
        return sorted({r.tag for r in self.rules})


class AttributeTrait(TraitBase):
    """Current value of a CRM profile attribute (profile_attributes.name)."""

    kind: Literal["attribute"]
    attribute: str
    dtype: Literal["string", "number"] = "string"


TraitDef = (
    CountTrait
    | AggregateTrait
    | DistinctCountTrait
    | FirstLastTrait
    | RecencyTrait
    | RfmTrait
    | ModeTrait
    | PreferredHourTrait
    | EngagementTrait
    | InterestTagsTrait
    | AttributeTrait
)
KIND_MODELS: dict[str, type[TraitBase]] = {
    "count": CountTrait,
    "sum": AggregateTrait,
    "avg": AggregateTrait,
    "min": AggregateTrait,
    "max": AggregateTrait,
    "distinct_count": DistinctCountTrait,
    "first": FirstLastTrait,
    "last": FirstLastTrait,
    "recency_days": RecencyTrait,
    "rfm": RfmTrait,
    "dominant": ModeTrait,
    "top": ModeTrait,
    "preferred_hour": PreferredHourTrait,
    "engagement": EngagementTrait,
    "interest_tags": InterestTagsTrait,
    "attribute": AttributeTrait,
}


@dataclass(frozen=True)
class OutputColumn:
    """One column of the traits table."""

    name: str
    dtype: str  # string | integer | number | timestamp | boolean | list
    kind: str
    trait: str
    description: str | None = None


@dataclass
class TraitSet:
    """Validated trait definitions, in file order, plus the property types they read."""

    traits: list[Any]
    properties: dict[str, str] = field(default_factory=dict)
    file: str = "<traits>"

    def __iter__(self) -> Any:
        return iter(self.traits)

    def __len__(self) -> int:
        return len(self.traits)

    def get(self, name: str) -> Any:
        for trait in self.traits:
            if trait.name == name:
                return trait
        from microseg.errors import NotFoundError

        known = [t.name for t in self.traits]
        raise NotFoundError(f"no trait '{name}'{did_you_mean(name, known)}")

    def columns(self) -> list[OutputColumn]:
        """Every output column of the traits table, in order (profile_id excluded)."""
        out: list[OutputColumn] = []
        for t in self.traits:
            out.extend(output_columns(t, self.properties))
        return out

    def population_relative(self) -> bool:
        """True when some value depends on the whole population (RFM scores, quantile labels)."""
        return any(
            isinstance(t, RfmTrait)
            or (isinstance(t, EngagementTrait) and t.labels.method == "quantiles")
            for t in self.traits
        )


def output_columns(t: Any, properties: dict[str, str]) -> list[OutputColumn]:
    """The column(s) one trait adds to the traits table."""
    d = t.description

    def one(dtype: str, suffix: str = "", desc: str | None = d) -> OutputColumn:
        return OutputColumn(t.name + suffix, dtype, t.kind, t.name, desc)

    if isinstance(t, (CountTrait, DistinctCountTrait, RecencyTrait, PreferredHourTrait)):
        return [one("integer")]
    if isinstance(t, AggregateTrait):
        if t.property is not None and t.kind in ("min", "max"):
            return [one(properties.get(t.property, "number"))]
        return [one("number")]
    if isinstance(t, (FirstLastTrait, ModeTrait)):
        return [one(properties.get(t.property, "string"))]
    if isinstance(t, RfmTrait):
        return [
            one("string", "", d or "RFM segment label"),
            one("integer", "_recency_days", "days since last matching event"),
            one("integer", "_frequency", "number of matching events / distinct orders"),
            one("number", "_monetary", "total monetary value"),
            one("integer", "_r", "recency score 1-5 (5 = most recent)"),
            one("integer", "_f", "frequency score 1-5"),
            one("integer", "_m", "monetary score 1-5"),
        ]
    if isinstance(t, EngagementTrait):
        return [
            one("number"),
            one("string", "_label", "Highly Engaged / Moderately Engaged / Lurker"),
        ]
    if isinstance(t, InterestTagsTrait):
        return [one("list")]
    if isinstance(t, AttributeTrait):
        return [one(t.dtype)]
    raise TypeError(f"unknown trait {t!r}")


# --------------------------------------------------------------------------- expressions
ALLOWED_NODES = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Paren, exp.Neg, exp.Literal, exp.Column)


def parse_expression(text: str, numeric: dict[str, str]) -> exp.Expression:
    """Parse an arithmetic expression over declared numeric properties into a safe tree.

    Only numeric literals, the four operators, parentheses and unqualified names of numeric
    properties are accepted; the result has every column quoted. Raises ValueError.
    """
    try:
        tree = sqlglot.parse_one(str(text), dialect="duckdb", into=exp.Condition)
    except (ParseError, sqlglot.errors.TokenError) as exc:
        raise ValueError(f"cannot parse expression '{text}': {str(exc).splitlines()[0]}") from None
    for node in tree.walk():
        if isinstance(node, exp.Identifier) and isinstance(node.parent, exp.Column):
            continue
        if not isinstance(node, ALLOWED_NODES):
            raise ValueError(
                f"expression '{text}' may only use numeric properties, numbers and + - * / "
                f"(found {node.sql(dialect='duckdb')!r})"
            )
        if isinstance(node, exp.Literal) and node.is_string:
            raise ValueError(f"expression '{text}' has a string literal {node.sql()!r}")
        if isinstance(node, exp.Column):
            if node.table:
                raise ValueError(
                    f"expression '{text}': use plain property names, not '{node.sql()}'"
                )
            name = node.name
            if name not in numeric:
                raise ValueError(
                    f"expression '{text}' uses '{name}', which is not a declared numeric property"
                    f"{did_you_mean(name, numeric)}"
                )

    def quote(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column):
            return exp.Column(this=exp.to_identifier(node.name, quoted=True))
        return node

    return tree.transform(quote)


def expression_columns(text: str) -> list[str]:
    """Names referenced by a (valid) expression."""
    tree = sqlglot.parse_one(str(text), dialect="duckdb", into=exp.Condition)
    return sorted({c.name for c in tree.find_all(exp.Column)})


# --------------------------------------------------------------------------- loading
def load_traits(source: Any, taxonomy: Taxonomy) -> TraitSet:
    """Validate a traits document (path, Document or text) against the taxonomy."""
    from pathlib import Path

    from microseg.config.yamlio import load_document, parse_text

    if isinstance(source, Document):
        doc = source
    elif isinstance(source, Path) or (
        isinstance(source, str)
        and "\n" not in source
        and source.endswith((".yaml", ".yml", ".json"))
    ):
        doc = load_document(source)
    else:
        doc = parse_text(str(source), "<traits>")
    return _Checker(doc, taxonomy).run()


class _Checker:
    def __init__(self, doc: Document, taxonomy: Taxonomy) -> None:
        self.doc = doc
        self.tax = taxonomy
        self.props = taxonomy.property_columns()
        self.numeric = {p: b for p, b in self.props.items() if b in NUMERIC}
        self.problems: list[Problem] = []

    def fail(self, message: str, loc: Loc) -> None:
        self.problems.append(self.doc.problem(message, loc))

    def run(self) -> TraitSet:
        data = self.doc.data
        if data is None:
            return TraitSet([], dict(self.props), self.doc.file)
        if not isinstance(data, dict) or "traits" not in data:
            raise DefinitionError(
                self.doc.problem("a traits file is a mapping with a 'traits' list")
            )
        extra = [k for k in data if k != "traits"]
        for key in extra:
            self.fail(f"unknown top-level key '{key}'{did_you_mean(str(key), ['traits'])}", (key,))
        items = data["traits"] or []
        if not isinstance(items, list):
            raise DefinitionError(self.doc.problem("'traits' must be a list", ("traits",)))
        traits: list[Any] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            loc: Loc = ("traits", i)
            trait = self._item(item, loc)
            if trait is None:
                continue
            self._semantics(trait, loc)
            for column in output_columns(trait, self.props):
                if column.name == "profile_id" or column.name in seen:
                    self.fail(f"duplicate trait column '{column.name}'", (*loc, "name"))
                seen[column.name] = i
            traits.append(trait)
        if self.problems:
            raise DefinitionError(self.problems)
        return TraitSet(traits, dict(self.props), self.doc.file)

    def _item(self, item: Any, loc: Loc) -> Any:
        if not isinstance(item, dict):
            self.fail("each trait is a mapping with 'name' and 'kind'", loc)
            return None
        kind = item.get("kind")
        if kind not in KIND_MODELS:
            shown = "missing 'kind'" if kind is None else f"unknown kind '{kind}'"
            self.fail(
                f"{shown}{did_you_mean(str(kind), KIND_MODELS)}; kinds: {', '.join(KIND_MODELS)}",
                (*loc, "kind") if kind is not None else loc,
            )
            return None
        try:
            return validate_model(KIND_MODELS[kind], self.doc, loc)
        except DefinitionError as exc:
            self.problems.extend(exc.problems)
            return None

    # -- taxonomy checks ---------------------------------------------------------------------
    def _semantics(self, t: Any, loc: Loc) -> None:
        events = self._filtered(t, loc)
        if isinstance(t, AggregateTrait):
            if t.property is not None:
                self._property(t.property, events, (*loc, "property"), numeric=True)
            else:
                self._expression(t.value_text(), events, (*loc, "expression"))
        elif isinstance(t, (DistinctCountTrait, FirstLastTrait)):
            self._property(t.property, events, (*loc, "property"))
        elif isinstance(t, ModeTrait):
            self._property(t.property, events, (*loc, "property"))
            if t.weight is not None:
                self._expression(t.weight, events, (*loc, "weight"))
        elif isinstance(t, RfmTrait):
            self._expression(t.monetary, events, (*loc, "monetary"))
            if t.frequency_of is not None:
                self._property(t.frequency_of, events, (*loc, "frequency_of"))
            if not t.segments:
                self.fail("rfm needs at least one segment", (*loc, "segments"))
        elif isinstance(t, EngagementTrait):
            for event in t.weights:
                self._event(event, (*loc, "weights", event))
        elif isinstance(t, InterestTagsTrait):
            for j, rule in enumerate(t.rules):
                self._filtered(rule, (*loc, "rules", j))
        elif isinstance(t, AttributeTrait) and not t.attribute.strip():
            self.fail("attribute name is empty", (*loc, "attribute"))

    def _filtered(self, f: Filtered, loc: Loc) -> list[str]:
        events = list(f.events) if f.events is not None else list(self.tax.events)
        for j, event in enumerate(f.events or []):
            self._event(event, (*loc, "events", j))
        for prop, cond in f.where.items():
            base = self._property(prop, events, (*loc, "where", prop))
            if base is None:
                continue
            if cond.numeric_ops() and base not in NUMERIC:
                ops = ", ".join(cond.numeric_ops())
                self.fail(
                    f"'{prop}' is {base}; {ops} need a numeric property", (*loc, "where", prop)
                )
            if (cond.like is not None or cond.matches is not None) and base != "string":
                self.fail(
                    f"'{prop}' is {base}; like/matches need a string property",
                    (*loc, "where", prop),
                )
        return events

    def _event(self, event: str, loc: Loc) -> None:
        if event not in self.tax.events and not self.tax.allow_unknown_events:
            self.fail(f"unknown event type '{event}'{did_you_mean(event, self.tax.events)}", loc)

    def _property(
        self, prop: str, events: list[str], loc: Loc, *, numeric: bool = False
    ) -> str | None:
        if prop in CORE_READABLE and not numeric:
            return "string"
        base = self.props.get(prop)
        if base is None:
            self.fail(f"unknown property '{prop}'{did_you_mean(prop, self.props)}", loc)
            return None
        declaring = [e for e in self.tax.events_declaring(prop) if e in events]
        if events and not declaring:
            self.fail(
                f"property '{prop}' is not declared on {', '.join(events)}"
                f" (it is on {', '.join(self.tax.events_declaring(prop))})",
                loc,
            )
        if numeric and base not in NUMERIC:
            self.fail(f"'{prop}' is {base}; this trait needs a numeric property", loc)
        return base

    def _expression(self, text: str, events: list[str], loc: Loc) -> None:
        try:
            parse_expression(text, self.numeric)
        except ValueError as exc:
            self.fail(str(exc), loc)
            return
        for name in expression_columns(text):
            self._property(name, events, loc, numeric=True)
