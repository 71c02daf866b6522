from __future__ import annotations

from pathlib import Path

import pytest

from microseg.config.project import Project
from microseg.errors import ConfigError, DefinitionError
from microseg.validation import validate_project


def test_init_creates_a_valid_project(tmp_path: Path) -> None:
    project = Project.init(tmp_path / "shop", "shop")
    assert project.settings.name == "shop"
    for sub in ("segments", "content", "campaigns", "experiments"):
        assert (project.root / sub).is_dir()
    assert "purchase" in project.settings.taxonomy.events
    assert validate_project(project.root)


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    Project.init(tmp_path)
    with pytest.raises(ConfigError, match="exists already"):
        Project.init(tmp_path)


def test_load_finds_project_in_parent(tmp_path: Path) -> None:
    Project.init(tmp_path)
    nested = tmp_path / "segments"
    assert Project.load(nested).root == tmp_path.resolve()


def test_missing_project_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `microseg init`"):
        Project.load(tmp_path)


def test_validate_reports_file_and_line(tmp_path: Path) -> None:
    Project.init(tmp_path)
    settings = tmp_path / "microseg.yaml"
    settings.write_text(settings.read_text().replace("timeout_minutes: 30", "timeout_minutes: -1"))
    with pytest.raises(DefinitionError) as info:
        validate_project(tmp_path)
    problem = info.value.problems[0]
    assert problem.file and problem.file.endswith("microseg.yaml")
    assert problem.line is not None and "greater than 0" in problem.message
