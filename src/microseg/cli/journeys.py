"""CLI: journeys validate / run / status / timers."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

from microseg.cli import console, frame_table, workspace


def _print(report: Any) -> None:
    console.print(report.summary())
    for error in report.errors[:20]:
        console.print(f"error: {error}", style="red", markup=False)


def register(app: typer.Typer) -> None:
    """Add the ``journeys`` command group to ``app``."""
    j_app = typer.Typer(help="Journeys: triggers, steps, timers, sends.", no_args_is_help=True)
    app.add_typer(j_app, name="journeys")

    @j_app.command("validate")
    def validate(
        files: list[Path] = typer.Argument(None, help="files (default: journeys/*.yaml)"),
    ) -> None:
        """Check journey files: shape, steps, segments, blocks, events (file:line on error)."""
        from microseg.activate.journey_validate import load_journeys, project_journey_files
        from microseg.cli import STATE
        from microseg.config.project import Project

        project = Project.load(STATE["project"])
        paths = files or project_journey_files(project.root)
        journeys = load_journeys(paths, project)
        console.print(f"[green]OK[/green]: {len(journeys)} journey files valid")

    @j_app.command("examples")
    def examples(
        overwrite: bool = typer.Option(False, "--overwrite", help="replace existing files"),
    ) -> None:
        """Copy the seed journeys (cart abandonment, gym renewal, re-engagement) and blocks."""
        from microseg.activate.journey_project import install_examples
        from microseg.cli import STATE
        from microseg.config.project import Project

        project = Project.load(STATE["project"])
        written = install_examples(project.root, overwrite=overwrite)
        for path in written:
            console.print(f"wrote {path.relative_to(project.root)}")
        console.print(f"{len(written)} files written (existing files kept unless --overwrite)")

    @j_app.command("run")
    def run(
        now: str | None = typer.Option(None, "--now", help="ISO time of the (first) cycle"),
        until: str | None = typer.Option(
            None, "--until", help="simulate cycles from --now up to this ISO time (no waiting)"
        ),
        loop: float | None = typer.Option(
            None, "--loop", help="seconds between cycles (simulated with --until, else real)"
        ),
        cycles: int | None = typer.Option(None, "--cycles", help="stop a real loop after N"),
        journey: list[str] = typer.Option(None, "--journey", "-j", help="only these journeys"),
        smtp: str | None = typer.Option(None, "--smtp", help="host:port (default: outbox)"),
        sender: str = typer.Option("microseg@localhost", "--sender", help="email From"),
    ) -> None:
        """Sweep triggers, resolve waits and goals, fire due timers, send (one or more cycles)."""
        from microseg.activate.journey_project import parse_time, project_engine
        from microseg.errors import ConfigError

        start = parse_time(now, "--now")
        end = parse_time(until, "--until")
        if loop is not None and loop < 0:
            raise ConfigError("--loop must be >= 0 seconds")
        with workspace() as ws:
            engine = project_engine(ws, names=journey or None, smtp=smtp, sender=sender)
            if end is not None:
                step = timedelta(seconds=loop if loop else 3600)
                first = start or engine.clock()
                if end < first:
                    raise ConfigError("--until is before --now")
                for report in engine.run_until(end, step, first):
                    _print(report)
                return
            done = 0
            while True:
                _print(engine.run(start if done == 0 else None))
                done += 1
                if loop is None or (cycles is not None and done >= cycles):
                    break
                try:
                    time.sleep(loop)
                except KeyboardInterrupt:
                    break

    @j_app.command("status")
    def status(journey: str | None = typer.Argument(None, help="one journey")) -> None:
        """Enrolments per journey, status and step; sends per journey."""
        from microseg.activate.journey_report import sends_frame, status_frame

        with workspace() as ws:
            console.print(frame_table(status_frame(ws.store, journey), title="enrolments"))
            console.print(frame_table(sends_frame(ws.store, journey), title="sends"))

    @j_app.command("timers")
    def timers(
        journey: str | None = typer.Argument(None, help="one journey"),
        limit: int = typer.Option(50, "--limit", help="pending timers to list"),
    ) -> None:
        """Pending timers (soonest first) and counts per journey and kind."""
        from microseg.activate.timers import Timers

        with workspace() as ws:
            t = Timers(ws.store)
            console.print(frame_table(t.counts(), title="timers"))
            console.print(frame_table(t.pending(journey, limit), title="pending", limit=limit))
