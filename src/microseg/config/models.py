"""Typed models of the project settings file (microseg.yaml) and its event taxonomy."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from microseg.config.sources import SourceSpec
from microseg.errors import did_you_mean

BaseType = Literal["string", "integer", "number", "boolean", "timestamp"]
BASE_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "timestamp")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

# Columns every event has; declared properties may not reuse these names.
CORE_EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "ts",
    "received_at",
    "user_id",
    "anonymous_id",
    "device_id",
    "email_token",
    "id_key",
    "session_id",
    "source",
)
IDENTITY_FIELDS: tuple[str, ...] = ("user_id", "email", "device_id", "anonymous_id")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"{what} '{value}' must be lower_snake_case (letters, digits, _; start with a letter)"
        )
    return value


def check_regex(value: str | None) -> str | None:
    """Refuse a pattern Python's `re` cannot compile (definition files share this check)."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


class Constraints(Strict):
    """Value constraints shared by custom types and properties."""

    enum: list[str | int | float] | None = None
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    taxonomy: str | None = Field(
        default=None, description="master taxonomy used to normalise categorical values"
    )

    @field_validator("pattern")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        return check_regex(value)


class CustomType(Constraints):
    """A named type built on a base type with constraints, e.g. currency = number >= 0."""

    base: BaseType


class PropertySpec(Constraints):
    """A typed event property."""

    type: str = "string"
    required: bool = False
    description: str | None = None


class EventSpec(Strict):
    """A declared event type and its typed properties."""

    description: str | None = None
    properties: dict[str, PropertySpec] = Field(default_factory=dict)

    @field_validator("properties", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `price: number` is shorthand for `price: {type: number}`
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


class Taxonomy(Strict):
    """Event types, custom types and master taxonomies (synonym -> canonical value)."""

    types: dict[str, CustomType] = Field(default_factory=dict)
    events: dict[str, EventSpec] = Field(default_factory=dict)
    master: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="name -> canonical value -> synonyms; 'event_type' renames incoming types",
    )
    allow_unknown_events: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Taxonomy:
        for name in self.types:
            check_name(name, "type name")
            if name in BASE_TYPES:
                raise ValueError(f"custom type '{name}' shadows a base type")
        seen: dict[str, tuple[str, str]] = {}
        for event, spec in self.events.items():
            check_name(event, "event type")
            for prop, pspec in spec.properties.items():
                check_name(prop, "property")
                if prop in CORE_EVENT_COLUMNS or prop == "email":
                    raise ValueError(f"property '{prop}' of '{event}' clashes with a core field")
                base = self.base_type(pspec.type)
                if base is None:
                    known = [*BASE_TYPES, *self.types]
                    raise ValueError(
                        f"property '{event}.{prop}' has unknown type '{pspec.type}'"
                        f"{did_you_mean(pspec.type, known)}"
                    )
                tax = pspec.taxonomy or self._type_constraints(pspec.type).taxonomy
                if tax is not None and tax not in self.master:
                    raise ValueError(
                        f"property '{event}.{prop}' uses unknown master taxonomy '{tax}'"
                        f"{did_you_mean(tax, self.master)}"
                    )
                if prop in seen and seen[prop][1] != base:
                    other = seen[prop][0]
                    raise ValueError(
                        f"property '{prop}' is {base} in '{event}' but {seen[prop][1]} in '{other}';"
                        " one property name must have one base type"
                    )
                seen[prop] = (event, base)
        for name, mapping in self.master.items():
            owner: dict[str, str] = {}
            for canonical, synonyms in mapping.items():
                for syn in [canonical, *synonyms]:
                    key = str(syn).strip().lower()
                    if key in owner and owner[key] != canonical:
                        raise ValueError(
                            f"master taxonomy '{name}': '{syn}' maps to both "
                            f"'{owner[key]}' and '{canonical}'"
                        )
                    owner[key] = canonical
        return self

    def base_type(self, type_name: str) -> str | None:
        if type_name in BASE_TYPES:
            return type_name
        custom = self.types.get(type_name)
        return custom.base if custom else None

    def _type_constraints(self, type_name: str) -> Constraints:
        return self.types.get(type_name) or Constraints()

    def effective(self, spec: PropertySpec) -> Constraints:
        """Constraints of a property merged over those of its custom type."""
        base = self._type_constraints(spec.type)
        merged = base.model_dump(include=set(Constraints.model_fields))
        for key, value in spec.model_dump(include=set(Constraints.model_fields)).items():
            if value is not None:
                merged[key] = value
        return Constraints(**merged)

    def property_columns(self) -> dict[str, str]:
        """Every declared property name -> its base type (one column each in the event store)."""
        out: dict[str, str] = {}
        for spec in self.events.values():
            for prop, pspec in spec.properties.items():
                out[prop] = self.base_type(pspec.type) or "string"
        return out

    def events_declaring(self, prop: str) -> list[str]:
        return [e for e, spec in self.events.items() if prop in spec.properties]

    def synonyms(self, name: str) -> dict[str, str]:
        """Lower-cased synonym (and canonical) -> canonical for one master taxonomy."""
        out: dict[str, str] = {}
        for canonical, syns in self.master.get(name, {}).items():
            for syn in [canonical, *syns]:
                out[str(syn).strip().lower()] = canonical
        return out


class SessionSettings(Strict):
    timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)


class IngestSettings(Strict):
    default_timezone: str = "UTC"
    max_future_skew_minutes: float = Field(default=5, ge=0)
    min_timestamp: str = "1990-01-01"


DEFAULT_BLOCKED = [
    "",
    "0",
    "-1",
    "null",
    "none",
    "nil",
    "nan",
    "undefined",
    "anonymous",
    "unknown",
    "n/a",
    "na",
    "test",
    "00000000-0000-0000-0000-000000000000",
]


class ProbabilisticSettings(Strict):
    enabled: bool = True
    threshold: float = Field(default=0.9, gt=0, le=1)
    fields: dict[str, float] = Field(
        default_factory=lambda: {
            "last_name": 0.3,
            "first_name": 0.2,
            "postal_code": 0.25,
            "phone": 0.25,
        },
        description="attribute -> weight in the match score",
    )


class IdentitySettings(Strict):
    blocked_values: list[str] = Field(default_factory=lambda: list(DEFAULT_BLOCKED))
    max_ids_per_profile: dict[str, int] = Field(
        default_factory=lambda: {"user_id": 1, "email": 5, "device_id": 20, "anonymous_id": 500}
    )
    probabilistic: ProbabilisticSettings = Field(default_factory=ProbabilisticSettings)

    @field_validator("max_ids_per_profile")
    @classmethod
    def _known_ids(cls, value: dict[str, int]) -> dict[str, int]:
        for key, limit in value.items():
            if key not in IDENTITY_FIELDS:
                raise ValueError(
                    f"unknown identity type '{key}'{did_you_mean(key, IDENTITY_FIELDS)}"
                )
            if limit < 1:
                raise ValueError(f"max_ids_per_profile.{key} must be >= 1")
        return value


# Tables the retention job may prune, with the timestamp column that ages their rows.
RETENTION_TABLES: dict[str, str] = {
    "events": "ts",
    "quarantine": "quarantined_at",
    "sends": "created_at",
    "membership_history": "changed_at",
    "experiment_exposures": "exposed_at",
    "scores": "scored_at",
    "audit_log": "logged_at",
    "import_batches": "finished_at",
    "consents": "recorded_at",
}


class PrivacySettings(Strict):
    key_file: str = Field(
        default=".microseg/keys.json",
        description="key file (never inside the database); MICROSEG_KEY_FILE overrides it",
    )
    pii_attributes: list[str] = Field(
        default_factory=lambda: ["email", "phone", "first_name", "last_name", "address"]
    )
    retention_days: dict[str, int] = Field(
        default_factory=dict,
        description="days to keep: 'events' (every type), 'events.<event_type>' (one type,"
        " overrides 'events') or a table of RETENTION_TABLES",
    )
    require_consent_for: list[str] = Field(default_factory=list)
    profile_attributes: list[str] | None = Field(
        default=None,
        description="minimisation: the only plain profile attributes imports store (PII"
        " attributes and identifiers are declared separately); unset stores every column",
    )
    purposes: list[str] = Field(
        default_factory=list,
        description="declared consent purposes; empty allows any lower_snake_case purpose",
    )

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: list[str]) -> list[str]:
        for purpose in value:
            check_name(purpose, "purpose")
        return value

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, value: dict[str, int]) -> dict[str, int]:
        for key, days in value.items():
            if days < 1:
                raise ValueError(f"retention_days.{key}: {days} must be at least 1 day")
            table, _, event_type = key.partition(".")
            if event_type:
                if table != "events":
                    raise ValueError(
                        f"retention_days.{key}: only 'events.<event_type>' takes a sub-key"
                    )
                check_name(event_type, "event type")
            elif table not in RETENTION_TABLES:
                raise ValueError(
                    f"retention_days: unknown table '{key}'{did_you_mean(key, list(RETENTION_TABLES))}"
                    f" (use one of: {', '.join(RETENTION_TABLES)})"
                )
        return value


class ProjectSettings(Strict):
    """Everything in microseg.yaml."""

    name: str = "microseg"
    store: str = ".microseg/microseg.duckdb"
    taxonomy: Taxonomy = Field(default_factory=Taxonomy)
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    sources: dict[str, SourceSpec] = Field(default_factory=dict)
