"""Journey definitions (``journeys/*.yaml``): trigger, steps, re-entry, goal, send policies.

A journey file holds one journey::

    name: cart_abandonment
    trigger: {event: add_to_cart}                 # or segment_entry / segment_exit / condition /
                                                  #    trait + drops_below|rises_above / date
    reentry: {policy: cooldown, cooldown: 7d}     # never (default) | always | cooldown
    goal: {event: purchase}                       # reaching it ends the enrolment
    quiet_hours: {start: "21:00", end: "08:00"}
    frequency_caps: [{max_sends: 3, window: 7d}]
    steps:
      - id: wait_checkout
        wait_for: purchase
        timeout: 24h
        on_event: exit                            # a step id, or exit
        on_timeout: remind                        # default: the next step
      - id: remind
        send: {channel: email, block: cart_reminder, purpose: email_marketing,
               discount: {prefix: CART}}

Conditions (the ``condition`` trigger and ``branch`` cases) are segment-language conditions,
compiled by the segment compiler. Steps run in list order unless ``next`` / a branch target
says otherwise; running past the last step completes the enrolment.
"""

from __future__ import annotations

from datetime import time, timedelta
from functools import cached_property
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from microseg.config.models import check_name
from microseg.segments.ast import (
    Condition,
    EventTypes,
    PropertyFilter,
    event_list,
    kind_of,
    parse_duration,
)

EXIT = "exit"
ChannelName = Literal["web", "email", "push"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


# ------------------------------------------------------------------------------- triggers
class EventTrigger(_Strict):
    """An event of one of these types (with property filters) happened since the last sweep."""

    kind: Literal["event"] = Field(default="event", exclude=True)
    event: EventTypes
    where: dict[str, PropertyFilter] = Field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        return event_list(self.event)


class SegmentEntryTrigger(_Strict):
    """The profile entered the segment since the last sweep (and is still a member)."""

    kind: Literal["segment_entry"] = Field(default="segment_entry", exclude=True)
    segment_entry: str


class SegmentExitTrigger(_Strict):
    """The profile left the segment since the last sweep (and is still out)."""

    kind: Literal["segment_exit"] = Field(default="segment_exit", exclude=True)
    segment_exit: str


class ConditionTrigger(_Strict):
    """A segment-language condition became true (edge-triggered between sweeps)."""

    kind: Literal["condition"] = Field(default="condition", exclude=True)
    condition: Condition


class TraitTrigger(_Strict):
    """A numeric trait crossed a threshold: ``drops_below`` or ``rises_above`` (edge-triggered)."""

    kind: Literal["trait"] = Field(default="trait", exclude=True)
    trait: str
    drops_below: float | None = None
    rises_above: float | None = None

    @model_validator(mode="after")
    def _one(self) -> TraitTrigger:
        if (self.drops_below is None) == (self.rises_above is None):
            raise ValueError("a trait trigger needs exactly one of 'drops_below' or 'rises_above'")
        return self


class DateTrigger(_Strict):
    """N days before/after a date attribute (or trait), at a UTC time of day.

    Every offset is one occurrence of the same group (the date value): a goal reached after
    the 7-day reminder stops the 3- and 1-day ones.
    """

    kind: Literal["date"] = Field(default="date", exclude=True)
    date: str
    before: list[int] = Field(default_factory=list)
    after: list[int] = Field(default_factory=list)
    at: time = time(9, 0)
    source: Literal["attribute", "trait"] = "attribute"

    @model_validator(mode="after")
    def _offsets(self) -> DateTrigger:
        if not self.before and not self.after:
            raise ValueError("a date trigger needs 'before' and/or 'after' day offsets")
        if any(d < 0 for d in [*self.before, *self.after]):
            raise ValueError("day offsets must be >= 0")
        return self

    @cached_property
    def offsets(self) -> list[int]:
        """Signed day offsets relative to the date (before -> negative)."""
        return sorted({-d for d in self.before} | set(self.after))


TRIGGER_KINDS = ("segment_entry", "segment_exit", "condition", "date", "trait", "event")


def trigger_kind(value: Any) -> str | None:
    """The kind of a raw trigger mapping (by its key) or of a trigger node."""
    return kind_of(value, TRIGGER_KINDS)


Trigger = Annotated[
    Union[  # noqa: UP007
        Annotated[SegmentEntryTrigger, Tag("segment_entry")],
        Annotated[SegmentExitTrigger, Tag("segment_exit")],
        Annotated[ConditionTrigger, Tag("condition")],
        Annotated[DateTrigger, Tag("date")],
        Annotated[TraitTrigger, Tag("trait")],
        Annotated[EventTrigger, Tag("event")],
    ],
    Discriminator(
        trigger_kind,
        custom_error_type="unknown_trigger",
        custom_error_message="not a trigger: give one of " + ", ".join(TRIGGER_KINDS),
    ),
]


# ------------------------------------------------------------------------------- steps
class DiscountSpec(_Strict):
    """A deterministic, per-profile discount code (HMAC of journey + profile id)."""

    prefix: str = "SAVE"
    length: int = Field(default=8, ge=6, le=20)
    percent: float | None = Field(default=None, gt=0, le=100)


class SendSpec(_Strict):
    """Render ``block`` for ``render_as`` and deliver it on delivery channel ``channel``."""

    channel: str = "email"
    block: str
    purpose: str = "marketing"
    render_as: ChannelName = "email"
    to: str = Field(default="email", description="context field holding the recipient")
    discount: DiscountSpec | None = None


class _Step(_Strict):
    id: str
    next: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if value == EXIT:
            raise ValueError(f"'{EXIT}' is reserved and cannot be a step id")
        return check_name(value, "step id")


class SendStep(_Step):
    kind: Literal["send"] = Field(default="send", exclude=True)
    send: SendSpec


class WaitStep(_Step):
    kind: Literal["wait"] = Field(default="wait", exclude=True)
    wait: str

    @field_validator("wait")
    @classmethod
    def _wait(cls, value: str) -> str:
        return _check_duration(value) or value

    @property
    def delay(self) -> timedelta:
        return parse_duration(self.wait)


class WaitForStep(_Step):
    """Wait for an event; ``on_event`` if it comes within ``timeout``, else ``on_timeout``."""

    kind: Literal["wait_for"] = Field(default="wait_for", exclude=True)
    wait_for: EventTypes
    where: dict[str, PropertyFilter] = Field(default_factory=dict)
    timeout: str
    on_event: str | None = None
    on_timeout: str | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: str) -> str:
        return _check_duration(value) or value

    @property
    def types(self) -> list[str]:
        return event_list(self.wait_for)

    @property
    def delay(self) -> timedelta:
        return parse_duration(self.timeout)


class BranchCase(_Strict):
    if_: Condition = Field(alias="if")
    goto: str


class BranchStep(_Step):
    """The first case whose condition holds decides; else ``else`` (default: the next step)."""

    kind: Literal["branch"] = Field(default="branch", exclude=True)
    branch: list[BranchCase] = Field(min_length=1)
    else_: str | None = Field(default=None, alias="else")


class ExitStep(_Step):
    kind: Literal["exit"] = Field(default="exit", exclude=True)
    exit: bool | str = True


STEP_KINDS = ("send", "wait_for", "wait", "branch", "exit")


def step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in STEP_KINDS if k in value), None)
    return getattr(value, "kind", None)


Step = Annotated[
    Union[  # noqa: UP007
        Annotated[SendStep, Tag("send")],
        Annotated[WaitForStep, Tag("wait_for")],
        Annotated[WaitStep, Tag("wait")],
        Annotated[BranchStep, Tag("branch")],
        Annotated[ExitStep, Tag("exit")],
    ],
    Discriminator(
        step_kind,
        custom_error_type="unknown_step",
        custom_error_message="not a step: give one of " + ", ".join(STEP_KINDS),
    ),
]


# ------------------------------------------------------------------------------- policies
class Reentry(_Strict):
    """May a profile enrol again after its enrolment ended? never | always | cooldown."""

    policy: Literal["never", "always", "cooldown"] = "never"
    cooldown: str | None = None

    @model_validator(mode="after")
    def _cooldown(self) -> Reentry:
        _check_duration(self.cooldown)
        if (self.policy == "cooldown") != (self.cooldown is not None):
            raise ValueError("'cooldown' is required with policy cooldown (and only then)")
        return self

    @property
    def cooldown_delta(self) -> timedelta:
        return parse_duration(self.cooldown) if self.cooldown else timedelta(0)


class Goal(_Strict):
    """An event that ends the enrolment (converted); also cancels pending steps."""

    event: EventTypes
    where: dict[str, PropertyFilter] = Field(default_factory=dict)

    @property
    def types(self) -> list[str]:
        return event_list(self.event)


class QuietSpec(_Strict):
    start: time = time(21, 0)
    end: time = time(8, 0)
    timezone: str = "UTC"


class CapSpec(_Strict):
    max_sends: int = Field(ge=1)
    window: str
    channel: str | None = None
    purpose: str | None = None

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _check_duration(value) or value


class Journey(_Strict):
    """One journey definition."""

    name: str
    description: str | None = None
    enabled: bool = True
    trigger: Trigger
    reentry: Reentry = Field(default_factory=Reentry)
    baseline: bool = Field(
        default=False,
        description="condition/trait triggers: the first sweep records who matches, enrols none",
    )
    lookback: str = Field(default="1d", description="window of the first sweep (events, dates)")
    campaign: str | None = Field(
        default=None, description="campaign whose pause/throttle applies (default: the name)"
    )
    goal: Goal | None = None
    quiet_hours: QuietSpec | None = None
    frequency_caps: list[CapSpec] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "journey name")

    @field_validator("reentry", mode="before")
    @classmethod
    def _reentry_shorthand(cls, value: Any) -> Any:
        return {"policy": value} if isinstance(value, str) else value

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str) -> str:
        return _check_duration(value) or value

    @cached_property
    def by_id(self) -> dict[str, Any]:
        return {s.id: s for s in self.steps}

    def step(self, step_id: str) -> Any:
        return self.by_id[step_id]

    def following(self, step_id: str) -> str | None:
        """The step after ``step_id`` (its ``next`` or the next in the list); None = complete."""
        step = self.by_id[step_id]
        if step.next is not None:
            return str(step.next)
        ids = [s.id for s in self.steps]
        i = ids.index(step_id)
        return ids[i + 1] if i + 1 < len(ids) else None

    def targets(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every step reference (location, target) for validation."""
        out: list[tuple[tuple[str | int, ...], str]] = []
        for i, s in enumerate(self.steps):
            if s.next is not None:
                out.append((("steps", i, "next"), s.next))
            if isinstance(s, WaitForStep):
                for f in ("on_event", "on_timeout"):
                    if getattr(s, f) is not None:
                        out.append((("steps", i, f), getattr(s, f)))
            if isinstance(s, BranchStep):
                for j, case in enumerate(s.branch):
                    out.append((("steps", i, "branch", j, "goto"), case.goto))
                if s.else_ is not None:
                    out.append((("steps", i, "else"), s.else_))
        return out
