from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from microseg.config.models import ProjectSettings
from microseg.config.yamlio import parse_text, validate_model
from microseg.errors import DefinitionError


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner


def test_positions_point_at_lines() -> None:
    doc = parse_text("name: a\ninner:\n  window: 3\n", "x.yaml")
    assert doc.data == {"name": "a", "inner": {"window": 3}}
    assert doc.locate(("inner", "window")) == (3, 3)
    assert doc.locate(("inner", "missing")) == (2, 1)


def test_type_error_names_file_line_and_cause() -> None:
    doc = parse_text("name: a\ninner:\n  window: soon\n", "seg.yaml")
    with pytest.raises(DefinitionError) as info:
        validate_model(Outer, doc)
    problem = info.value.problems[0]
    assert (problem.file, problem.line) == ("seg.yaml", 3)
    assert "integer" in problem.message and "soon" in problem.message


def test_unknown_field_suggests_closest() -> None:
    doc = parse_text("name: a\ninner:\n  windw: 3\n", "seg.yaml")
    with pytest.raises(DefinitionError) as info:
        validate_model(Outer, doc)
    messages = [str(p) for p in info.value.problems]
    assert any("unknown field 'windw' (did you mean 'window'?)" in m for m in messages)
    assert any(m.startswith("seg.yaml:3") for m in messages)


def test_yaml_syntax_error_is_located() -> None:
    with pytest.raises(DefinitionError) as info:
        parse_text("name: [a\ninner: 1\n", "bad.yaml")
    assert info.value.problems[0].file == "bad.yaml"
    assert info.value.problems[0].line is not None


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(DefinitionError, match="duplicate key 'name'"):
        parse_text("name: a\nname: b\n", "dup.yaml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("taxonomy:\n  events:\n    View: {}\n", "lower_snake_case"),
        ("taxonomy:\n  events:\n    a: {properties: {p: numbr}}\n", "did you mean 'number'"),
        (
            "taxonomy:\n  events:\n    a: {properties: {p: number}}\n    b: {properties: {p: string}}\n",
            "one property name must have one base type",
        ),
        ("taxonomy:\n  events:\n    a: {properties: {ts: string}}\n", "clashes with a core field"),
        ("identity:\n  max_ids_per_profile: {emial: 3}\n", "did you mean 'email'"),
        ("taxonomy:\n  master:\n    r: {A: [x], B: [X]}\n", "maps to both"),
    ],
)
def test_settings_refuse_bad_taxonomies(text: str, fragment: str) -> None:
    with pytest.raises(DefinitionError) as info:
        validate_model(ProjectSettings, parse_text(text, "microseg.yaml"))
    assert fragment in str(info.value)
    assert all(p.line is not None for p in info.value.problems)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1e-05", 1e-05), ("-2E3", -2000.0), ("1.5e-3", 0.0015), ("12", 12), ("'1e5'", "1e5")],
)
def test_exponent_floats_load_as_numbers(text: str, expected: object) -> None:
    # PyYAML alone (YAML 1.1) reads 1e-05 as a string; JSON and YAML 1.2 read a number.
    value = parse_text(f"x: {text}\n").data["x"]
    assert value == expected and type(value) is type(expected)
