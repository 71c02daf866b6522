"""Load YAML/JSON definition files keeping the line and column of every value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from microseg.errors import DefinitionError, Problem, did_you_mean, display_path

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class Document:
    """Parsed definition file: plain data plus a map from value path to (line, column)."""

    data: Any
    file: str
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def locate(self, loc: Loc) -> tuple[int | None, int | None]:
        """Line/column of the deepest known prefix of ``loc`` (1-based)."""
        for end in range(len(loc), -1, -1):
            pos = self.positions.get(tuple(loc[:end]))
            if pos is not None:
                return pos
        return None, None

    def problem(self, message: str, loc: Loc = ()) -> Problem:
        line, column = self.locate(loc)
        dotted = ".".join(str(p) for p in loc) or None
        return Problem(message, file=self.file, line=line, column=column, path=dotted)

    def sub(self, loc: Loc) -> Document:
        """A view of the sub-tree at ``loc`` with positions re-rooted."""
        data = self.data
        for part in loc:
            data = data[part]
        n = len(loc)
        positions = {k[n:]: v for k, v in self.positions.items() if k[:n] == tuple(loc)}
        return Document(data, self.file, positions)


def _construct(node: yaml.Node, loc: Loc, positions: dict[Loc, tuple[int, int]], file: str) -> Any:
    positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, (*loc, "__key__"), {}, file)
            if isinstance(key, (dict, list)):
                line = key_node.start_mark.line + 1
                raise DefinitionError(Problem("mapping keys must be plain values", file, line))
            if key in out:
                line = key_node.start_mark.line + 1
                raise DefinitionError(Problem(f"duplicate key '{key}'", file, line))
            key = key if isinstance(key, (str, int)) else str(key)
            out[key] = _construct(value_node, (*loc, key), positions, file)
            positions[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, (*loc, i), positions, file) for i, v in enumerate(node.value)]
    return _scalar(node)


class _Loader(yaml.SafeLoader):
    """Safe loading, plus YAML 1.2 / JSON floats: PyYAML (YAML 1.1) reads `1e-05` as a string."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _scalar(node: yaml.Node) -> Any:
    """Resolve one scalar node with the safe loader's rules (ints, floats, bools, dates)."""
    loader = _Loader("")
    return loader.construct_object(node, deep=True)


def parse_text(text: str, file: str = "<string>") -> Document:
    """Parse YAML (or JSON) text into a Document; syntax errors carry line and column."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        raise DefinitionError(Problem(f"invalid YAML: {exc.problem}", file, line, col)) from None
    positions: dict[Loc, tuple[int, int]] = {}
    data = None if node is None else _construct(node, (), positions, file)
    return Document(data, file, positions)


def load_document(path: str | Path) -> Document:
    """Read and parse a definition file."""
    p = Path(path)
    shown = display_path(p)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DefinitionError(Problem("file not found", shown)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DefinitionError(Problem("file is not valid UTF-8", shown, line)) from None
    return parse_text(text, shown)


def validate_model(model: type[M], doc: Document, loc: Loc = ()) -> M:
    """Validate ``doc`` (or its sub-tree at ``loc``) against a pydantic model.

    Every pydantic error becomes a Problem with the file, line and a readable cause;
    unknown fields get a "did you mean" from the model's field names.
    """
    data = doc.sub(loc).data if loc else doc.data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DefinitionError(_problems(exc, doc, loc, model)) from None


def _problems(
    exc: ValidationError, doc: Document, base: Loc, model: type[BaseModel]
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = (*base, *(p for p in err["loc"] if not _is_union_tag(p)))
        if err["type"] == "extra_forbidden":
            name = str(loc[-1])
            choices = _field_names_at(model, tuple(err["loc"][:-1]))
            msg = f"unknown field '{name}'{did_you_mean(name, choices)}"
        else:
            msg = err["msg"]
            if err["type"] not in {"missing", "value_error", "assertion_error"} and "input" in err:
                shown = repr(err["input"])
                msg += f" (got {shown[:60]})"
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(doc.problem(msg, loc))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts union member / function names into loc, e.g. 'function-after[...]'
    return isinstance(part, str) and (
        "[" in part or part in {"str", "int", "float", "dict", "list"}
    )


def _field_names_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _inner_model(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in args or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
