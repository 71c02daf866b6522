"""Validate ``journeys/*.yaml``: shape (pydantic) and references, every problem located.

``validate_journey_document(doc, project)`` is the project validator for ``journeys/*.yaml``;
it checks step ids and step references, segments (against ``segments/*.yaml``), content
blocks (``content/*.yaml``), event types and properties (the project taxonomy), trait-free
segment-language conditions, time zones and durations, each with file:line and a
"did you mean".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ValidationError

from microseg.activate.journey_model import (
    EXIT,
    STEP_KINDS,
    TRIGGER_KINDS,
    BranchCase,
    BranchStep,
    ConditionTrigger,
    DateTrigger,
    EventTrigger,
    ExitStep,
    Journey,
    SegmentEntryTrigger,
    SegmentExitTrigger,
    SendStep,
    TraitTrigger,
    WaitForStep,
    WaitStep,
)
from microseg.config.yamlio import Document, Loc, load_document
from microseg.errors import DefinitionError, Problem, did_you_mean, display_path
from microseg.segments.ast import KINDS as CONDITION_KINDS
from microseg.segments.ast import Segment, SegmentRef, walk
from microseg.segments.catalog import Catalog, check_segment

JOURNEY_GLOB = "journeys/*.yaml"
_TRIGGERS: dict[str, type[BaseModel]] = {
    "segment_entry": SegmentEntryTrigger,
    "segment_exit": SegmentExitTrigger,
    "condition": ConditionTrigger,
    "date": DateTrigger,
    "trait": TraitTrigger,
    "event": EventTrigger,
}
_STEPS: dict[str, type[BaseModel]] = {
    "send": SendStep,
    "wait_for": WaitForStep,
    "wait": WaitStep,
    "branch": BranchStep,
    "exit": ExitStep,
}


def _inner(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", None) or ():
        found = _inner(arg)
        if found is not None:
            return found
    return None


def _strip(loc: tuple[Any, ...]) -> tuple[Loc, type[BaseModel] | None]:
    """Drop pydantic's union tags from an error location; return the innermost model."""
    out: list[Any] = []
    model: type[BaseModel] | None = Journey
    expect: str | None = None  # which union's tag may come next
    for part in loc:
        prev = out[-1] if out else None
        if isinstance(part, str) and "[" in part:
            continue
        if expect == "trigger" and part in TRIGGER_KINDS:
            model, expect = _TRIGGERS[part], None
            continue
        if expect == "step" and part in STEP_KINDS:
            model, expect = _STEPS[part], None
            continue
        if expect == "condition" and isinstance(part, str) and part in CONDITION_KINDS:
            model, expect = CONDITION_KINDS[part], None
            continue
        out.append(part)
        expect = None
        if out == ["trigger"]:
            expect = "trigger"
        elif len(out) == 2 and out[0] == "steps" and isinstance(part, int):
            expect = "step"
        elif part in ("condition", "if", "not") or (
            isinstance(part, int) and prev in ("all", "any")
        ):
            expect = "condition"
        if isinstance(part, str) and model is not None:
            fields = {f.alias or n: f for n, f in model.model_fields.items()}
            info = fields.get(part)
            if info is not None:
                model = _inner(info.annotation) or model
    return tuple(out), model


def journey_from_document(doc: Document) -> Journey:
    """Validate the shape of one parsed journey document."""
    if not isinstance(doc.data, dict):
        raise DefinitionError(doc.problem("a journey file must be a mapping with name and steps"))
    try:
        return Journey.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc, model = _strip(tuple(err["loc"]))
            if err["type"] == "extra_forbidden":
                name = str(loc[-1])
                fields = [f.alias or n for n, f in (model.model_fields if model else {}).items()]
                fields = [f for f in fields if f != "kind"]
                msg = f"unknown field '{name}'{did_you_mean(name, fields)}"
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
                if (
                    err["type"]
                    not in {
                        "missing",
                        "value_error",
                        "unknown_trigger",
                        "unknown_step",
                        "unknown_condition",
                    }
                    and "input" in err
                ):
                    msg += f" (got {repr(err['input'])[:60]})"
            problems.append(doc.problem(msg, loc))
        raise DefinitionError(problems) from None


def _condition_doc(doc: Document, loc: Loc, name: str) -> Document:
    """The condition at ``loc`` as a one-rule segment document, keeping the file positions."""
    data = doc.sub(loc).data
    n = len(loc)
    positions = {("rule", *k[n:]): v for k, v in doc.positions.items() if k[:n] == tuple(loc)}
    return Document({"name": name, "rule": data}, doc.file, positions)


def _project_names(root: Path | None) -> tuple[set[str] | None, set[str] | None]:
    """(segment names, block names) of the project files; None when unknown or unreadable."""
    if root is None:
        return None, None
    from microseg.personalize.content import load_project_content
    from microseg.segments.parse import load_segment, project_segment_files

    segments: set[str] = set()
    for path in project_segment_files(root):
        try:
            segments.add(load_segment(path).name)
        except DefinitionError:
            segments.add(path.stem)  # broken file: reported by its own validator
    try:
        blocks: set[str] | None = {b.name for b in load_project_content(root)}
    except DefinitionError:
        blocks = None
    return segments, blocks


def check_journey(
    journey: Journey,
    doc: Document,
    *,
    catalog: Catalog,
    segments: Iterable[str] | None,
    blocks: Iterable[str] | None,
) -> list[Problem]:
    """Reference problems of a shape-valid journey (empty when valid)."""
    problems: list[Problem] = []
    seg_names = None if segments is None else set(segments)
    block_names = None if blocks is None else set(blocks)

    def events(types: list[str], where: Mapping[str, Any], loc: Loc, field: str) -> None:
        if not catalog.check_events:
            return
        for t in types:
            if t not in catalog.events:
                problems.append(
                    doc.problem(
                        f"unknown event type '{t}'{did_you_mean(t, catalog.events)}",
                        (*loc, field),
                    )
                )
        known = catalog.properties(types)
        for prop in where:
            if prop not in known:
                problems.append(
                    doc.problem(
                        f"unknown property '{prop}' for {', '.join(types)}"
                        f"{did_you_mean(prop, known)}",
                        (*loc, "where", prop),
                    )
                )

    def segment(name: str, loc: Loc) -> None:
        if seg_names is not None and name not in seg_names:
            problems.append(
                doc.problem(f"unknown segment '{name}'{did_you_mean(name, seg_names)}", loc)
            )

    def condition(cond: Any, loc: Loc) -> None:
        seg = Segment(name=f"{journey.name}_condition", rule=cond)
        sub = _condition_doc(doc, loc, seg.name)
        known = set(seg_names) if seg_names is not None else set()
        refs = {n.segment for _, n in walk(cond) if isinstance(n, SegmentRef)}
        found = check_segment(seg, catalog, known | (refs if seg_names is None else set()), sub)
        where = ".".join(str(p) for p in loc)
        for p in found:
            path = p.path or "rule"
            problems.append(replace(p, path=where + path.removeprefix("rule")))

    trig = journey.trigger
    if isinstance(trig, SegmentEntryTrigger):
        segment(trig.segment_entry, ("trigger", "segment_entry"))
    elif isinstance(trig, SegmentExitTrigger):
        segment(trig.segment_exit, ("trigger", "segment_exit"))
    elif isinstance(trig, EventTrigger):
        events(trig.types, trig.where, ("trigger",), "event")
    elif isinstance(trig, ConditionTrigger):
        condition(trig.condition, ("trigger", "condition"))
    if journey.goal is not None:
        events(journey.goal.types, journey.goal.where, ("goal",), "event")
    if journey.quiet_hours is not None:
        try:
            ZoneInfo(journey.quiet_hours.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(
                doc.problem(
                    f"unknown time zone '{journey.quiet_hours.timezone}'",
                    ("quiet_hours", "timezone"),
                )
            )
    seen: dict[str, int] = {}
    for i, step in enumerate(journey.steps):
        if step.id in seen:
            problems.append(
                doc.problem(
                    f"duplicate step id '{step.id}' (first at step {seen[step.id] + 1})",
                    ("steps", i, "id"),
                )
            )
        seen.setdefault(step.id, i)
        if isinstance(step, SendStep) and block_names is not None:
            if step.send.block not in block_names:
                problems.append(
                    doc.problem(
                        f"unknown content block '{step.send.block}'"
                        f"{did_you_mean(step.send.block, block_names)}",
                        ("steps", i, "send", "block"),
                    )
                )
        elif isinstance(step, WaitForStep):
            events(step.types, step.where, ("steps", i), "wait_for")
        elif isinstance(step, BranchStep):
            for j, case in enumerate(step.branch):
                assert isinstance(case, BranchCase)
                condition(case.if_, ("steps", i, "branch", j, "if"))
    ids = [*seen, EXIT]
    for loc, target in journey.targets():
        if target not in seen and target != EXIT:
            problems.append(doc.problem(f"unknown step '{target}'{did_you_mean(target, ids)}", loc))
    return problems


def validate_journey_document(doc: Document, project: Any = None) -> Journey:
    """The project validator for ``journeys/*.yaml`` (shape, then every reference)."""
    journey = journey_from_document(doc)
    root = getattr(project, "root", None)
    segments, blocks = _project_names(Path(root) if root is not None else None)
    catalog = Catalog.from_settings(getattr(project, "settings", None))
    problems = check_journey(journey, doc, catalog=catalog, segments=segments, blocks=blocks)
    if problems:
        raise DefinitionError(problems)
    return journey


def project_journey_files(root: str | Path) -> list[Path]:
    return sorted(Path(root).glob(JOURNEY_GLOB))


def load_journeys(paths: Iterable[str | Path], project: Any = None) -> dict[str, Journey]:
    """Validate several journey files; one DefinitionError lists the problems of all."""
    journeys: dict[str, Journey] = {}
    problems: list[Problem] = []
    for path in paths:
        try:
            doc = load_document(path)
            journey = validate_journey_document(doc, project)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        if journey.name in journeys:
            problems.append(
                Problem(f"journey '{journey.name}' is defined twice", display_path(path))
            )
        journeys[journey.name] = journey
    if problems:
        raise DefinitionError(problems)
    return journeys


def load_project_journeys(project: Any) -> dict[str, Journey]:
    """Every journey of a project (``project.root/journeys/*.yaml``)."""
    return load_journeys(project_journey_files(project.root), project)
