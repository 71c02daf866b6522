"""Exception hierarchy. The library raises these; shells (CLI, HTTP) map them to output."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class MicrosegError(Exception):
    """Base class for every error a user can cause and fix."""


class ConfigError(MicrosegError):
    """A project or settings problem (missing project, bad settings value)."""


class NotFoundError(MicrosegError):
    """A named thing (profile, segment, trait, file) does not exist."""


class ConflictError(MicrosegError):
    """The request contradicts stored state (e.g. merging two known users)."""


class ImportFileError(MicrosegError):
    """A source file cannot be read at all (missing, empty, wrong encoding, unparseable)."""


class PermissionDenied(MicrosegError):
    """The caller's role does not allow the action."""


@dataclass(frozen=True)
class Problem:
    """One problem in a definition file, located by file, line and column."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str | None = None  # dotted path inside the document, e.g. "traits.rfm.window"

    def __str__(self) -> str:
        where = self.file or "<definition>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        at = f" ({self.path})" if self.path else ""
        return f"{where}: {self.message}{at}"


class DefinitionError(MicrosegError):
    """One or more invalid definitions; each problem carries file, line and cause."""

    def __init__(self, problems: Iterable[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or ''."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def display_path(path: str | Path) -> str:
    """Path relative to the working directory when possible, for readable messages."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
