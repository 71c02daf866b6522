"""One validator for every definition file in a project (microseg.yaml, traits, segments...)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from microseg.config.models import ProjectSettings
from microseg.config.project import SETTINGS_FILE, Project
from microseg.config.yamlio import Document, load_document, validate_model
from microseg.errors import DefinitionError, Problem

Validator = Callable[[Document, Project], object]


def _settings(doc: Document, project: Project) -> object:
    return validate_model(ProjectSettings, doc)


def validators() -> dict[str, Validator]:
    """Glob (relative to the project root) -> validator of one parsed file."""
    from microseg.activate.journey_validate import validate_journey_document
    from microseg.experiments.assignment import ExperimentSpec
    from microseg.measure.guards import validate_campaign_document
    from microseg.personalize.content import validate_content_document
    from microseg.personalize.decision_rules import validate_decisions_document
    from microseg.segments.parse import validate_segment_file
    from microseg.traits.compute import validate_traits_file

    def _experiment(doc: Document, project: Project) -> object:
        return validate_model(ExperimentSpec, doc)

    return {
        SETTINGS_FILE: _settings,
        "traits.yaml": validate_traits_file,
        "segments/*.yaml": validate_segment_file,
        "content/*.yaml": validate_content_document,
        "experiments/*.yaml": _experiment,
        "campaigns/*.yaml": validate_campaign_document,
        "journeys/*.yaml": validate_journey_document,
        "decisions/*.yaml": validate_decisions_document,
    }


def validate_file(path: Path, project: Project) -> object:
    """Validate one definition file by its place in the project."""
    rel = path.resolve().relative_to(project.root)
    for pattern, check in validators().items():
        if rel.match(pattern):
            return check(load_document(path), project)
    raise DefinitionError(Problem("not a known definition file", str(rel)))


def validate_project(root: str | Path = ".") -> list[Path]:
    """Validate every definition file; raises one DefinitionError listing all problems."""
    project = Project.load(root)
    problems: list[Problem] = []
    checked: list[Path] = []
    for pattern, check in validators().items():
        for path in sorted(project.root.glob(pattern)):
            try:
                check(load_document(path), project)
            except DefinitionError as exc:
                problems.extend(exc.problems)
            checked.append(path)
    if problems:
        raise DefinitionError(problems)
    return checked
