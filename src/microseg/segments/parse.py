"""Read segment files (YAML or JSON) into the AST with located, helpful errors."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from microseg.config.yamlio import Document, load_document, parse_text
from microseg.errors import DefinitionError, Problem, did_you_mean
from microseg.segments.ast import KINDS, Segment, condition_kind, to_dict
from microseg.segments.catalog import Catalog, check_all

SEGMENT_GLOB = "segments/*.yaml"


def _precheck(doc: Document) -> None:
    """Catch mappings that are no condition at all, with their exact location."""
    data = doc.data
    if not isinstance(data, dict):
        raise DefinitionError(doc.problem("a segment file must be a mapping with name and rule"))
    problems: list[Problem] = []

    def visit(node: Any, loc: tuple[str | int, ...]) -> None:
        if not isinstance(node, dict):
            problems.append(doc.problem("a condition must be a mapping", loc))
            return
        kind = condition_kind(node)
        if kind is None:
            keys = ", ".join(map(str, node)) or "nothing"
            problems.append(
                doc.problem(
                    f"not a condition (has {keys}); start it with one of {', '.join(KINDS)}", loc
                )
            )
        elif kind in ("all", "any") and isinstance(node[kind], list):
            for i, child in enumerate(node[kind]):
                visit(child, (*loc, kind, i))
        elif kind == "not":
            visit(node["not"], (*loc, "not"))

    if "rule" in data:
        visit(data["rule"], ("rule",))
    if problems:
        raise DefinitionError(problems)


def _strip_tags(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], type[Any]]:
    """Drop the union tags pydantic inserts after each condition; return the innermost model."""
    out: list[Any] = []
    model: type[Any] = Segment
    at_condition = False
    for part in loc:
        if at_condition and isinstance(part, str) and part in KINDS:
            model = KINDS[part]
            at_condition = False
            continue
        out.append(part)
        prev = out[-2] if len(out) > 1 else None
        at_condition = (
            (len(out) == 1 and part == "rule")
            or (isinstance(part, int) and prev in ("all", "any"))
            or part == "not"
        )
        if not at_condition and isinstance(part, str) and part not in KINDS:
            field = getattr(model, "model_fields", {}).get(part)
            inner = getattr(field, "annotation", None) if field else None
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
    return tuple(out), model


def segment_from_document(doc: Document) -> Segment:
    """Validate the shape of one parsed segment document."""
    _precheck(doc)
    try:
        return Segment.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc, model = _strip_tags(tuple(err["loc"]))
            loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
            if err["type"] == "extra_forbidden":
                # the unknown key is the last part of pydantic's location, whatever it is
                # called (a key with "[" in it is not one of pydantic's tagged-union parts)
                name = str(err["loc"][-1])
                if not loc or loc[-1] != err["loc"][-1]:
                    loc = (*loc, err["loc"][-1])
                fields = [f.alias or n for n, f in getattr(model, "model_fields", {}).items()]
                msg = f"unknown field '{name}'{did_you_mean(name, fields)}"
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
                if (
                    err["type"] not in {"missing", "value_error", "unknown_condition"}
                    and "input" in err
                ):
                    msg += f" (got {repr(err['input'])[:60]})"
            problems.append(doc.problem(msg, loc))
        raise DefinitionError(problems) from None


def parse_segment(source: str | Mapping[str, Any] | Segment, file: str = "<segment>") -> Segment:
    """A segment from YAML/JSON text, a mapping or an existing Segment (shape checks only)."""
    if isinstance(source, Segment):
        return source
    if isinstance(source, Mapping):
        return segment_from_document(Document(dict(source), file))
    return segment_from_document(parse_text(source, file))


def load_segment(path: str | Path) -> Segment:
    """Read one segment file (shape checks; names are checked by ``check_all``)."""
    return segment_from_document(load_document(path))


def load_segments(paths: Iterable[str | Path]) -> tuple[dict[str, Segment], dict[str, Document]]:
    """Read several files; one DefinitionError lists the problems of all of them."""
    segments: dict[str, Segment] = {}
    docs: dict[str, Document] = {}
    problems: list[Problem] = []
    for path in paths:
        try:
            doc = load_document(path)
            seg = segment_from_document(doc)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        if seg.name in segments:
            problems.append(doc.problem(f"segment '{seg.name}' is defined twice", ("name",)))
        segments[seg.name] = seg
        docs[seg.name] = doc
    if problems:
        raise DefinitionError(problems)
    return segments, docs


def project_segment_files(root: str | Path) -> list[Path]:
    return sorted(Path(root).glob(SEGMENT_GLOB))


def validate_segment_file(doc: Document, project: Any) -> Segment:
    """The one-validator hook for ``segments/*.yaml``: shape, names, references, cycles.

    Event types and properties are checked against the project taxonomy; segment references
    against the other files of the project. Trait names are checked when the segment is
    previewed or computed against a store (the traits live there).
    """
    seg = segment_from_document(doc)
    root = getattr(project, "root", None)
    others: dict[str, Segment] = {}
    if root is not None:
        for path in project_segment_files(root):
            if Path(path).resolve() == Path(doc.file).resolve() or path.name == Path(doc.file).name:
                continue
            try:
                other = load_segment(path)
            except DefinitionError:
                continue  # reported when that file is validated
            others[other.name] = other
    others[seg.name] = seg
    catalog = Catalog.from_settings(getattr(project, "settings", None))
    try:
        check_all(others, catalog, {seg.name: doc})
    except DefinitionError as exc:
        mine = [p for p in exc.problems if p.file == doc.file]
        if mine:
            raise DefinitionError(mine) from None
    return seg


def dump_segment(seg: Segment, fmt: str = "yaml") -> str:
    """Print a segment as YAML (default) or JSON text."""
    data = to_dict(seg)
    if fmt == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
