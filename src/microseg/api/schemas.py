"""Request and response schemas of the HTTP API (documentation and admin bodies).

The collector parses bodies itself with orjson for speed; these models describe them in the
OpenAPI document. Storage rows never leave the API without going through one of these shapes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from microseg.api.keys import Role


class EventIn(BaseModel):
    """One event: canonical fields plus declared properties, flat."""

    model_config = ConfigDict(extra="allow")

    event_id: str = Field(description="unique id; resending the same id stores it once")
    event_type: str
    timestamp: str = Field(description="ISO 8601; naive values are in the project's default zone")
    user_id: str | None = None
    anonymous_id: str | None = None
    device_id: str | None = None
    email: str | None = Field(default=None, description="tokenised before storage")
    session_id: str | None = None


class EventBatchIn(BaseModel):
    events: list[EventIn] = Field(description="up to max_batch_events events")


class EventError(BaseModel):
    index: int
    reason: str = Field(description="quarantine reason code, or event_too_large / unencodable")
    detail: str | None = None


class CollectResult(BaseModel):
    """200 = committed to the store (exact counts); 202 = durably spooled, counts pending."""

    status: Literal["committed", "spooled"]
    received: int
    rejected: int = Field(description="refused before spooling (too large); not stored")
    accepted: int | None = None
    duplicates: int | None = None
    quarantined: int | None = None
    errors: list[EventError]


class DecisionOut(BaseModel):
    profile_id: str
    segments: list[str]
    traits: dict[str, Any]
    updated_at: datetime | None


class DecisionCondition(BaseModel):
    condition: str = Field(description="e.g. 'in segment vip', 'did add_to_cart within 24h'")
    value: Any = Field(description="what the profile has (membership, trait value, event time)")
    passed: bool


class DecisionWhy(BaseModel):
    """Why this block was served (G5): rule conditions, data used, consent, cap, control."""

    segments: list[str] = Field(description="segments the chosen rule required")
    conditions: list[DecisionCondition]
    data: dict[str, Any] = Field(description="traits, matched events, profile fields used")
    consent: dict[str, Any] | None = Field(description="{purpose, granted} when the rule needs one")
    cap: dict[str, Any] | None = Field(description="{max, per, scope, used} when capped")
    control: dict[str, Any] | None = Field(description="{percent, bucket, held_out}")
    skipped: list[dict[str, Any]] = Field(description="higher-priority rules passed over, why")
    fallback: bool = False


class PlacementDecision(BaseModel):
    placement: str
    rule: str | None = Field(description="the rule that applied; null = fallback")
    block: str
    version: int | None
    variant: str | None
    control: bool = Field(description="held out: served the placement's fallback")
    rendered: dict[str, str] | None = Field(description="part -> text (subject/title/text/html)")
    why: DecisionWhy


class DecisionContentOut(DecisionOut):
    """With ``?placement=``: the profile plus one decision per placement."""

    decisions: list[PlacementDecision] | None = None


class QuarantineItem(BaseModel):
    q_id: int
    source: str | None
    row_number: int | None
    reason: str
    detail: str | None
    record: dict[str, Any] | None
    quarantined_at: datetime
    status: str


class QuarantinePage(BaseModel):
    items: list[QuarantineItem]
    next_after: int | None = Field(description="pass as ?after= for the next page")


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    name: str | None = Field(default=None, max_length=200)
    rate_per_second: float | None = Field(default=None, gt=0)


class ApiKeyCreated(BaseModel):
    key_id: str
    role: str
    name: str | None
    key: str = Field(description="shown once; only a keyed hash is stored")


class ApiKeyPublic(BaseModel):
    key_id: str
    name: str | None
    role: str
    rate_per_second: float | None
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/problem+json": {}}}
    for code, text in {
        401: "missing or invalid API key",
        403: "the key's role may not do this",
        422: "invalid request",
        429: "rate limit exceeded (see Retry-After)",
    }.items()
}
