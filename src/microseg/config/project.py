"""A microseg project folder: microseg.yaml, traits.yaml, segments/, content/, campaigns/."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from microseg.config.models import ProjectSettings
from microseg.config.yamlio import Document, load_document, validate_model
from microseg.errors import ConfigError

SETTINGS_FILE = "microseg.yaml"
TEMPLATE_FILES = ("microseg.yaml", "traits.yaml")
PROJECT_DIRS = ("segments", "content", "campaigns", "experiments", "journeys", "decisions")
# Journey examples need their content blocks: `microseg journeys examples` installs both.
EMPTY_DIRS = frozenset({"journeys"})


@dataclass
class Project:
    """A loaded project: its folder, settings and the parsed settings document."""

    root: Path
    settings: ProjectSettings
    document: Document

    @classmethod
    def load(cls, root: str | Path = ".") -> Project:
        """Load the project whose microseg.yaml is in ``root`` or one of its parents."""
        start = Path(root).resolve()
        for folder in (start, *start.parents):
            if (folder / SETTINGS_FILE).exists():
                doc = load_document(folder / SETTINGS_FILE)
                settings = (
                    validate_model(ProjectSettings, doc)
                    if doc.data is not None
                    else ProjectSettings()
                )
                return cls(folder, settings, doc)
        raise ConfigError(
            f"no {SETTINGS_FILE} in {start} or its parents; run `microseg init` first"
        )

    @classmethod
    def init(cls, root: str | Path, name: str | None = None, *, force: bool = False) -> Project:
        """Create a project folder from the bundled templates."""
        folder = Path(root)
        if (folder / SETTINGS_FILE).exists() and not force:
            raise ConfigError(f"{folder / SETTINGS_FILE} exists already; pass --force to overwrite")
        folder.mkdir(parents=True, exist_ok=True)
        templates = resources.files("microseg.config") / "templates"
        for fname in TEMPLATE_FILES:
            src = templates / fname
            if src.is_file():
                text = src.read_text()
                if fname == SETTINGS_FILE:
                    text = text.replace(
                        "name: my-project", f"name: {name or folder.resolve().name}"
                    )
                (folder / fname).write_text(text)
        for sub in PROJECT_DIRS:
            (folder / sub).mkdir(exist_ok=True)
            tdir = templates / sub
            if tdir.is_dir() and sub not in EMPTY_DIRS:
                for item in tdir.iterdir():
                    if item.is_file():
                        with resources.as_file(item) as path:
                            shutil.copy(path, folder / sub / item.name)
        gi = folder / ".gitignore"
        if not gi.exists():
            gi.write_text(".microseg/\n")
        return cls.load(folder)

    def path(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def store_path(self) -> Path:
        return self.path(self.settings.store)

    @property
    def key_path(self) -> Path:
        return self.path(self.settings.privacy.key_file)
