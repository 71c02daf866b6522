"""The `microseg` command line: thin Typer shells over the Workspace."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pydantic
import typer
from rich.console import Console
from rich.table import Table

from microseg.errors import DefinitionError, MicrosegError

app = typer.Typer(
    name="microseg",
    help="Micro-targeted audience segmentation and personalisation engine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Piped or captured output has no terminal width to respect: give tables room (a terminal
# keeps its own width).
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
STATE: dict[str, Any] = {"debug": False, "project": Path(".")}


@app.callback()
def _root(
    project: Path = typer.Option(Path("."), "--project", "-p", help="project folder"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    STATE["project"] = project
    STATE["debug"] = debug or bool(os.environ.get("MICROSEG_DEBUG"))


def _cell(value: Any) -> str:
    """Missing values (None, NaN, NaT, NA) print as empty cells."""
    import pandas as pd

    return "" if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)) else str(value)


def frame_table(
    df: Any,
    title: str | None = None,
    limit: int | None = 50,
    cell: Callable[[Any], str] = _cell,
) -> Table:
    """A DataFrame as a Rich table (first ``limit`` rows; None shows all)."""
    t = Table(title=title)
    rows = df if limit is None else df.head(limit)
    for i, c in enumerate(df.columns):
        if i == 0:  # the row key (a name or id): keep it whole so it can be copied
            width = max([len(str(c)), *(len(cell(v)) for v in rows[c])], default=0)
            t.add_column(str(c), no_wrap=True, min_width=min(width, 40))
        else:
            t.add_column(str(c), overflow="fold")
    for row in rows.itertuples(index=False):
        t.add_row(*(cell(v) for v in row))
    return t


def workspace(**kwargs: Any) -> Any:
    """Open the current project with Rich progress bars."""
    from microseg.console import RichProgress, SilentProgress
    from microseg.workspace import Workspace

    progress = (
        RichProgress()
        if sys.stderr.isatty() or os.environ.get("MICROSEG_PROGRESS")
        else SilentProgress()
    )
    return Workspace.open(STATE["project"], progress=progress, actor="cli", **kwargs)


SUBCOMMANDS: tuple[str, ...] = (
    "ingest",
    "identity",
    "quality",
    "traits",
    "segments",
    "discover",
    "predict",
    "content",
    "experiments",
    "serve",
    "demo",
    "bench",
    "report",
    "recommend",
    "journeys",
    "privacy",
    "spark",
)


def _register() -> None:
    """Add every domain's commands (each module has a `register(app)`)."""
    import importlib

    if STATE.get("registered"):
        return
    for name in SUBCOMMANDS:
        importlib.import_module(f"microseg.cli.{name}").register(app)
    STATE["registered"] = True


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes print one line; --debug shows the traceback."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except DefinitionError as exc:
        for problem in exc.problems:
            err_console.print(f"[red]Error:[/red] {problem}", highlight=False, markup=True)
        _exit(exc)
    except MicrosegError as exc:
        err_console.print(f"[red]Error:[/red] {exc}", highlight=False)
        _exit(exc)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        err_console.print("Aborted.")
        raise SystemExit(1) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except OSError as exc:
        if STATE["debug"]:
            raise
        err_console.print(f"[red]Error:[/red] {exc}", highlight=False)
        raise SystemExit(1) from None
    except pydantic.ValidationError as exc:  # settings from the environment (MICROSEG_API_*)
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or exc.title
            err_console.print(f"[red]Error:[/red] setting {where}: {error['msg']}", highlight=False)
        _exit(exc)


def _exit(exc: BaseException) -> None:
    if STATE["debug"]:
        raise exc
    raise SystemExit(1)


Command = Callable[..., Any]
