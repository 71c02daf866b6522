"""Source definitions: file format and the mapping of source columns to canonical fields."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from microseg.errors import ImportFileError, did_you_mean

FileFormat = Literal["csv", "jsonl", "parquet"]

# Canonical event fields a source may map (besides declared properties).
EVENT_FIELDS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "timestamp",
    "user_id",
    "anonymous_id",
    "device_id",
    "email",
    "email_token",
    "session_id",
)


class FieldMap(BaseModel):
    """How one canonical field is produced from a source row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = Field(default=None, description="source column (dotted path in JSON)")
    value: str | int | float | bool | None = Field(default=None, description="a constant")
    prefix: str | None = None
    when_missing: str | None = Field(
        default=None, description="only use this mapping on rows where that column is empty"
    )
    values: dict[str, str] | None = Field(default=None, description="remap source values")
    format: str | None = Field(default=None, description="strptime format for timestamps")
    timezone: str | None = Field(default=None, description="zone of naive source timestamps")
    unit: Literal["s", "ms", "us"] | None = Field(default=None, description="epoch timestamps")

    @model_validator(mode="after")
    def _one_source(self) -> FieldMap:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' or 'value'")
        return self


class SourceSpec(BaseModel):
    """A named import source: format options and field mapping."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: FileFormat | None = None
    delimiter: str | None = None
    encoding: Literal["utf-8", "utf-16", "latin-1"] = "utf-8"
    header: bool = True
    fields: dict[str, FieldMap] = Field(default_factory=dict)

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"column": v} if isinstance(v, str) else v for k, v in value.items()}
        return value


def detect_format(path: Path, declared: FileFormat | None) -> FileFormat:
    """File format from the declaration or the file name (.csv, .jsonl/.ndjson, .parquet; .gz ok)."""
    if declared:
        return declared
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in {".gz", ".zst"}]
    ext = suffixes[-1] if suffixes else ""
    if ext in {".csv", ".tsv", ".txt"}:
        return "csv"
    if ext in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if ext in {".parquet", ".pq"}:
        return "parquet"
    raise ImportFileError(
        f"{path.name}: cannot tell the format from the extension '{ext}'; "
        "pass --format csv|jsonl|parquet"
    )


def resolve_fields(
    spec: SourceSpec, source_columns: list[str], properties: list[str]
) -> dict[str, FieldMap]:
    """Canonical field -> mapping: explicit mappings plus same-name columns mapped implicitly.

    Raises ImportFileError when a mapped column is not in the file (with a did-you-mean)."""
    known = set(EVENT_FIELDS) | set(properties)
    fields: dict[str, FieldMap] = {}
    for name, fmap in spec.fields.items():
        if name not in known:
            raise ImportFileError(
                f"mapping names unknown field '{name}'{did_you_mean(name, known)}; "
                "declare it as an event property in the taxonomy"
            )
        fields[name] = fmap
    lower = {c.lower(): c for c in source_columns}
    for name in known:
        if name not in fields and name in lower:
            fields[name] = FieldMap(column=lower[name])
    top = {c.split(".")[0] for c in source_columns}
    for name, fmap in fields.items():
        for column in (fmap.column, fmap.when_missing):
            if column is None:
                continue
            root = column.split(".")[0]
            if column not in source_columns and root not in top:
                raise ImportFileError(
                    f"field '{name}' maps column '{column}', which the file does not have"
                    f"{did_you_mean(column, source_columns)}; columns: {', '.join(source_columns[:20])}"
                )
    return fields
