"""The segment definition language: a typed AST of pydantic node classes.

A segment file (YAML or JSON) holds one segment::

    name: cart_abandoners
    description: added to cart, no purchase within 24 h
    min_size: 50
    rule:
      all:
        - first: add_to_cart
          not_then: purchase
          within: 24h
          last: 7d
        - consent: email_marketing

Each condition is a mapping recognised by its leading key (``all``, ``any``, ``not``,
``trait``, ``event``, ``first``, ``recency``, ``geo``, ``postal_code``, ``consent``,
``segment``, ``bucket``); pydantic validates it into the node class of that kind.
``to_dict`` prints a segment back to plain data; parse -> print -> parse is the identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from microseg.config.models import check_name, check_regex
from microseg.store import naive_utc as to_naive_utc

Scalar = Union[bool, int, float, str]  # noqa: UP007 - pydantic smart-mode union order
DURATION_RE = re.compile(r"^(\d+)(s|m|h|d|w)$")
DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DISTANCE_RE = re.compile(r"^(\d+(?:\.\d+)?)(m|km|mi)$")
DISTANCE_KM = {"m": 0.001, "km": 1.0, "mi": 1.609344}


def parse_duration(text: str) -> timedelta:
    """'30d' -> 30 days. Units: s, m (minutes), h, d, w; whole numbers only."""
    match = DURATION_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"duration '{text}' must look like 90s, 10m, 24h, 30d or 2w")
    return timedelta(seconds=int(match.group(1)) * DURATION_SECONDS[match.group(2)])


def parse_distance_km(text: str) -> float:
    """'1mi' -> 1.609344 km. Units: m, km, mi."""
    match = DISTANCE_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"distance '{text}' must look like 500m, 2km or 1mi")
    return float(match.group(1)) * DISTANCE_KM[match.group(2)]


def _duration(value: Any) -> Any:
    if value is not None:
        parse_duration(value)
    return value


class Node(BaseModel):
    """Base of every AST node: unknown fields refused, immutable, aliases accepted."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @cached_property
    def label(self) -> str:
        """A short human label of this node (cached; see ``describe``)."""
        return describe(self)


class Quantile(Node):
    """A population-relative threshold: the q-quantile of a trait over all profiles."""

    quantile: float = Field(ge=0, le=1)


Threshold = Union[Quantile, bool, int, float, str]  # noqa: UP007

COMPARE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between")
VALUE_OPS = (
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "in",
    "not_in",
    "exists",
    "contains",
    "regex",
)


class Ops(Node):
    """Exactly one comparison applied to a value (trait or event property)."""

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: Threshold | None = None
    gte: Threshold | None = None
    lt: Threshold | None = None
    lte: Threshold | None = None
    between: tuple[Scalar, Scalar] | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in")
    not_in: list[Scalar] | None = None
    exists: bool | None = None
    contains: Scalar | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Ops:
        set_ops = [op for op in VALUE_OPS if self.op_value(op) is not None]
        if len(set_ops) != 1:
            raise ValueError(
                f"give exactly one comparison of {', '.join(VALUE_OPS)} (got {set_ops or 'none'})"
            )
        check_regex(self.regex)
        return self

    def op_value(self, op: str) -> Any:
        return getattr(self, "in_" if op == "in" else op)

    @cached_property
    def op(self) -> str:
        """The one comparison set on this node."""
        return next(op for op in VALUE_OPS if self.op_value(op) is not None)

    @cached_property
    def value(self) -> Any:
        return self.op_value(self.op)


class Compare(Node):
    """One numeric comparison of an aggregate; none given means ``gte: 1`` (it happened)."""

    eq: float | None = None
    ne: float | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    between: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> Compare:
        set_ops = [op for op in COMPARE_OPS if getattr(self, op) is not None]
        if len(set_ops) > 1:
            raise ValueError(f"give one comparison of {', '.join(COMPARE_OPS)} (got {set_ops})")
        return self

    @cached_property
    def op(self) -> str:
        return next((op for op in COMPARE_OPS if getattr(self, op) is not None), "gte")

    @cached_property
    def value(self) -> Any:
        found = getattr(self, self.op)
        return 1 if found is None else found


PropertyFilter = Union[Ops, Scalar]  # noqa: UP007 - shorthand scalar means eq
EventTypes = Union[str, list[str]]  # noqa: UP007


def event_list(value: EventTypes) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class Windowed(Node):
    """A rolling window ``last: 30d`` or an absolute one ``since``/``until`` ([since, until))."""

    last: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @field_validator("last")
    @classmethod
    def _check_last(cls, value: str | None) -> str | None:
        return _duration(value)

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else to_naive_utc(value)

    @model_validator(mode="after")
    def _window(self) -> Windowed:
        if self.last is not None and (self.since or self.until):
            raise ValueError("use either 'last' or 'since'/'until', not both")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("'since' must be before 'until'")
        return self

    def bounds(self, as_of: datetime) -> tuple[datetime | None, bool, datetime]:
        """(lower, lower_inclusive, upper_inclusive_or_exclusive) for events at ``as_of``.

        Rolling: ts > as_of - last and ts <= as_of. Absolute: since <= ts < until, ts <= as_of.
        """
        if self.last is not None:
            return as_of - parse_duration(self.last), False, as_of
        return self.since, True, as_of

    @cached_property
    def rolling(self) -> timedelta | None:
        return parse_duration(self.last) if self.last is not None else None


# --------------------------------------------------------------------------- conditions
class All(Node):
    kind: ClassVar[str] = "all"
    all: list[Condition] = Field(min_length=1)


class Any_(Node):
    kind: ClassVar[str] = "any"
    any: list[Condition] = Field(min_length=1)


class Not(Node):
    kind: ClassVar[str] = "not"
    not_: Condition = Field(alias="not")


class TraitCond(Ops):
    """Compare a trait (a column of ``traits``, or ``score.<model>``) with a value."""

    kind: ClassVar[str] = "trait"
    trait: str


class EventCond(Windowed):
    """Aggregate events of some types (with property filters) in a window and compare.

    With ``per_session`` and/or ``same`` the events are grouped (by session, by property
    values) and the condition holds when at least one group passes the comparison.
    """

    kind: ClassVar[str] = "event"
    event: EventTypes
    where: dict[str, PropertyFilter] = Field(default_factory=dict)
    aggregate: Literal["count", "sum", "avg", "min", "max", "count_distinct"] = "count"
    of: str | None = None
    per_session: bool = False
    same: list[str] = Field(default_factory=list)
    eq: float | None = None
    ne: float | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    between: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _aggregate(self) -> EventCond:
        if self.aggregate != "count" and not self.of:
            raise ValueError(f"aggregate '{self.aggregate}' needs 'of: <property>'")
        Compare(**{op: getattr(self, op) for op in COMPARE_OPS})
        return self

    @cached_property
    def compare(self) -> Compare:
        return Compare(**{op: getattr(self, op) for op in COMPARE_OPS})

    @property
    def grouped(self) -> bool:
        return self.per_session or bool(self.same)


class SequenceCond(Windowed):
    """``first`` then ``then`` within T, or ``first`` not followed by ``not_then`` within T.

    The window applies to the first event. A drop-off is only settled once T has passed.
    """

    kind: ClassVar[str] = "first"
    first: EventTypes
    first_where: dict[str, PropertyFilter] = Field(default_factory=dict)
    then: EventTypes | None = None
    not_then: EventTypes | None = None
    then_where: dict[str, PropertyFilter] = Field(default_factory=dict)
    within: str

    @field_validator("within")
    @classmethod
    def _check_within(cls, value: str) -> str:
        return _duration(value)

    @model_validator(mode="after")
    def _one_follow(self) -> SequenceCond:
        if (self.then is None) == (self.not_then is None):
            raise ValueError("a sequence needs exactly one of 'then' or 'not_then'")
        return self

    @property
    def followed(self) -> bool:
        return self.then is not None

    @cached_property
    def within_delta(self) -> timedelta:
        return parse_duration(self.within)

    @cached_property
    def second(self) -> list[str]:
        return event_list(self.then if self.then is not None else self.not_then or [])


class RecencyCond(Node):
    """The latest event of some types is older (or newer) than a duration before as_of."""

    kind: ClassVar[str] = "recency"
    recency: EventTypes
    where: dict[str, PropertyFilter] = Field(default_factory=dict)
    older_than: str | None = None
    newer_than: str | None = None
    or_never: bool = False

    @field_validator("older_than", "newer_than")
    @classmethod
    def _check(cls, value: str | None) -> str | None:
        return _duration(value)

    @model_validator(mode="after")
    def _one(self) -> RecencyCond:
        if (self.older_than is None) == (self.newer_than is None):
            raise ValueError("recency needs exactly one of 'older_than' or 'newer_than'")
        if self.or_never and self.newer_than is not None:
            raise ValueError("'or_never' only makes sense with 'older_than'")
        return self

    @cached_property
    def duration(self) -> timedelta:
        return parse_duration(self.older_than or self.newer_than or "")


class Point(Node):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class GeoSpec(Node):
    """Within ``radius`` of a point, a named store, or any of several stores."""

    radius: str
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    store: str | None = None
    stores: list[str] | None = None
    lat_trait: str = "latitude"
    lon_trait: str = "longitude"

    @field_validator("radius")
    @classmethod
    def _radius(cls, value: str) -> str:
        parse_distance_km(value)
        return value

    @model_validator(mode="after")
    def _target(self) -> GeoSpec:
        given = [self.lat is not None or self.lon is not None, bool(self.store), bool(self.stores)]
        if sum(given) != 1:
            raise ValueError("geo needs exactly one of lat/lon, 'store' or 'stores'")
        if given[0] and (self.lat is None or self.lon is None):
            raise ValueError("geo needs both 'lat' and 'lon'")
        return self

    @property
    def radius_km(self) -> float:
        return parse_distance_km(self.radius)

    def store_names(self) -> list[str]:
        return [self.store] if self.store else list(self.stores or [])


class GeoCond(Node):
    kind: ClassVar[str] = "geo"
    geo: GeoSpec


class PostalCond(Node):
    """Postal code (a trait, default ``postal_code``) in a list; ``'100*'`` is a prefix."""

    kind: ClassVar[str] = "postal_code"
    postal_code: list[str] = Field(min_length=1)
    field: str = "postal_code"

    @field_validator("postal_code", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value


class ConsentCond(Node):
    """The latest consent of the profile for a purpose is granted and not expired."""

    kind: ClassVar[str] = "consent"
    consent: str


class SegmentRef(Node):
    """Member of another segment (evaluated from its definition, same as_of)."""

    kind: ClassVar[str] = "segment"
    segment: str


class BucketSpec(Node):
    """Deterministic bucket: int(md5(salt:profile_id)[:8], 16) % of, kept if in [lo, hi)."""

    salt: str
    of: int = Field(default=100, ge=2, le=1_000_000)
    range: tuple[int, int]

    @model_validator(mode="after")
    def _range(self) -> BucketSpec:
        lo, hi = self.range
        if not 0 <= lo < hi <= self.of:
            raise ValueError(f"bucket range must satisfy 0 <= lo < hi <= {self.of}")
        return self


class BucketCond(Node):
    kind: ClassVar[str] = "bucket"
    bucket: BucketSpec


# Order matters: 'first' before 'event'-like keys, 'postal_code' before 'trait'.
KINDS: dict[str, type[Node]] = {
    "all": All,
    "any": Any_,
    "not": Not,
    "first": SequenceCond,
    "recency": RecencyCond,
    "event": EventCond,
    "geo": GeoCond,
    "postal_code": PostalCond,
    "trait": TraitCond,
    "consent": ConsentCond,
    "segment": SegmentRef,
    "bucket": BucketCond,
}


def kind_of(value: Any, kinds: Iterable[str]) -> str | None:
    """The kind of a raw mapping (the first of ``kinds`` among its keys) or of a parsed node
    (its ``kind``): the discriminator of a tagged union written as ``{kind: ...}`` mappings."""
    if isinstance(value, dict):
        return next((k for k in kinds if k in value), None)
    return getattr(value, "kind", None)


def condition_kind(value: Any) -> str | None:
    """The kind of a raw condition mapping (by its leading key) or of a condition node."""
    return kind_of(value, KINDS)


Condition = Annotated[
    Union[  # noqa: UP007
        Annotated[All, Tag("all")],
        Annotated[Any_, Tag("any")],
        Annotated[Not, Tag("not")],
        Annotated[SequenceCond, Tag("first")],
        Annotated[RecencyCond, Tag("recency")],
        Annotated[EventCond, Tag("event")],
        Annotated[GeoCond, Tag("geo")],
        Annotated[PostalCond, Tag("postal_code")],
        Annotated[TraitCond, Tag("trait")],
        Annotated[ConsentCond, Tag("consent")],
        Annotated[SegmentRef, Tag("segment")],
        Annotated[BucketCond, Tag("bucket")],
    ],
    Discriminator(
        condition_kind,
        custom_error_type="unknown_condition",
        custom_error_message="not a condition: start it with one of " + ", ".join(KINDS),
    ),
]

for _model in (All, Any_, Not):
    _model.model_rebuild()


class Segment(Node):
    """One segment definition."""

    name: str
    description: str | None = None
    rule: Condition
    min_size: int | None = Field(default=None, ge=0)
    stores: dict[str, Point] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "segment name")


LEAF_TYPES = (
    TraitCond,
    EventCond,
    SequenceCond,
    RecencyCond,
    GeoCond,
    PostalCond,
    ConsentCond,
    SegmentRef,
    BucketCond,
)
Leaf = Union[  # noqa: UP007
    TraitCond,
    EventCond,
    SequenceCond,
    RecencyCond,
    GeoCond,
    PostalCond,
    ConsentCond,
    SegmentRef,
    BucketCond,
]


def children(cond: Any) -> list[tuple[tuple[str | int, ...], Any]]:
    """Direct sub-conditions with their relative location."""
    if isinstance(cond, All):
        return [(("all", i), c) for i, c in enumerate(cond.all)]
    if isinstance(cond, Any_):
        return [(("any", i), c) for i, c in enumerate(cond.any)]
    if isinstance(cond, Not):
        return [(("not",), cond.not_)]
    return []


def walk(cond: Any, loc: tuple[str | int, ...] = ("rule",)) -> Any:
    """Yield (loc, node) for every node of a condition tree, depth first."""
    yield loc, cond
    for rel, child in children(cond):
        yield from walk(child, (*loc, *rel))


def loc_text(loc: tuple[str | int, ...]) -> str:
    """('rule', 'all', 1) -> 'rule.all[1]'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _kind_first(value: Any) -> Any:
    """Put each condition's leading key (its kind) first, for readable printing."""
    if isinstance(value, list):
        return [_kind_first(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _kind_first(v) for k, v in value.items()}
    kind = condition_kind(out)
    if kind is not None and kind in out:
        out = {kind: out.pop(kind), **out}
    return out


def to_dict(segment: Segment) -> dict[str, Any]:
    """Print a segment back to plain data (YAML/JSON ready); the inverse of parsing."""
    data = segment.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    data["rule"] = _kind_first(data["rule"])
    return data


def describe(cond: Any) -> str:
    """A short human label of a condition (for explain and history reasons)."""
    data = cond.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)
    if isinstance(cond, (All, Any_)):
        return f"{cond.kind} of {len(data[cond.kind])}"
    if isinstance(cond, Not):
        return "not"
    return ", ".join(f"{k}: {v}" for k, v in data.items())


def event_columns(segments: Iterable[Segment]) -> tuple[set[str], set[str]]:
    """The event types the segments read and the event columns their conditions use."""
    types: set[str] = set()
    cols = {"event_type", "ts", "session_id"}
    for seg in segments:
        for _, node in walk(seg.rule):
            if isinstance(node, EventCond):
                types.update(event_list(node.event))
                cols.update(node.where, node.same, [node.of] if node.of else [])
            elif isinstance(node, SequenceCond):
                types.update([*event_list(node.first), *node.second])
                cols.update(node.first_where, node.then_where)
            elif isinstance(node, RecencyCond):
                types.update(event_list(node.recency))
                cols.update(node.where)
    return types, cols
