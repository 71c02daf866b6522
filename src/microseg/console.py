"""One progress protocol: Rich bars in a terminal, silence in tests, events in the API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Progress(Protocol):
    """Report progress of long work: start a task, advance it, stop it."""

    def start(self, label: str, total: float | None = None) -> None: ...
    def update(self, advance: float = 1.0, *, note: str | None = None) -> None: ...
    def stop(self) -> None: ...


class SilentProgress:
    """Progress that reports nothing (library default, tests)."""

    def start(self, label: str, total: float | None = None) -> None:
        return None

    def update(self, advance: float = 1.0, *, note: str | None = None) -> None:
        return None

    def stop(self) -> None:
        return None


class RecordingProgress:
    """Progress that keeps what it was told; used by the API stream and by tests."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float | None]] = []

    def start(self, label: str, total: float | None = None) -> None:
        self.events.append(("start", label, total))

    def update(self, advance: float = 1.0, *, note: str | None = None) -> None:
        self.events.append(("update", note or "", advance))

    def stop(self) -> None:
        self.events.append(("stop", "", None))


class RichProgress:
    """Progress bars in the terminal via Rich; one bar per started task."""

    def __init__(self) -> None:
        self._bar: object | None = None
        self._task: int | None = None

    def start(self, label: str, total: float | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _RichProgress

        self.stop()
        bar = _RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        bar.start()
        self._bar, self._task = bar, bar.add_task(label, total=total)

    def update(self, advance: float = 1.0, *, note: str | None = None) -> None:
        if self._bar is not None and self._task is not None:
            kwargs = {"description": note} if note else {}
            self._bar.update(self._task, advance=advance, **kwargs)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()  # type: ignore[attr-defined]
            self._bar, self._task = None, None


@contextmanager
def step(progress: Progress, label: str, total: float | None = None) -> Iterator[Progress]:
    """Context manager: start a progress task and always stop it."""
    progress.start(label, total)
    try:
        yield progress
    finally:
        progress.stop()
