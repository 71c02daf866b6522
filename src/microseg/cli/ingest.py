"""CLI: init, validate, import, quarantine, profiles."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from microseg.cli import STATE, console, frame_table, workspace


def register(app: typer.Typer) -> None:
    quarantine_app = typer.Typer(
        help="Invalid records kept with their reasons.", no_args_is_help=True
    )
    profiles_app = typer.Typer(help="Look at unified profiles.", no_args_is_help=True)
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(profiles_app, name="profiles")

    @app.command()
    def init(
        folder: Path = typer.Argument(Path("."), help="folder to create the project in"),
        name: str | None = typer.Option(None, help="project name (default: folder name)"),
        force: bool = typer.Option(False, help="overwrite an existing microseg.yaml"),
    ) -> None:
        """Create a project: microseg.yaml, traits.yaml, segments/, content/, campaigns/."""
        from microseg.config.project import Project

        project = Project.init(folder, name, force=force)
        console.print(f"Created project [bold]{project.settings.name}[/bold] in {project.root}")

    @app.command()
    def validate() -> None:
        """Validate every definition file of the project (file, line and cause on error)."""
        from microseg.validation import validate_project

        checked = validate_project(STATE["project"])
        console.print(f"[green]OK[/green]: {len(checked)} definition files valid")

    @app.command("import")
    def import_(
        files: list[Path] = typer.Argument(..., help="CSV, JSON Lines or Parquet files"),
        source: str | None = typer.Option(
            None, "--source", "-s", help="a source from microseg.yaml"
        ),
        fmt: str | None = typer.Option(None, "--format", help="csv | jsonl | parquet"),
        map_: list[str] = typer.Option([], "--map", help="field=column, repeatable"),
    ) -> None:
        """Import event files; invalid rows are quarantined with a reason."""
        from microseg.config.sources import SourceSpec

        with workspace() as ws:
            spec = ws.source(source) if source else SourceSpec()
            if fmt or map_:
                fields = dict(spec.fields)
                for item in map_:
                    field, _, column = item.partition("=")
                    if not column:
                        raise typer.BadParameter(f"--map expects field=column, got '{item}'")
                    fields[field] = {"column": column}
                spec = SourceSpec.model_validate(
                    {
                        **spec.model_dump(exclude_none=True),
                        "format": fmt or spec.format,
                        "fields": {
                            k: (v.model_dump(exclude_none=True) if hasattr(v, "model_dump") else v)
                            for k, v in fields.items()
                        },
                    }
                )
            for f in files:
                r = ws.import_events(f, source=source, spec=spec)
                console.print(
                    f"{f.name}: read {r.rows_read:,} · stored {r.inserted:,} · duplicates "
                    f"{r.duplicates:,} · quarantined {r.quarantined:,} ({r.rows_per_second:,.0f} rows/s)"
                )
                for reason, n in r.reasons.items():
                    console.print(f"  quarantined {n:,} × {reason}")

    @quarantine_app.command("list")
    def quarantine_list(
        reason: str | None = typer.Option(None, help="only this reason code"),
        status: str = typer.Option("open", help="open | replayed | all"),
        limit: int = typer.Option(50, help="rows to show"),
    ) -> None:
        """Show quarantined records and why."""
        with workspace() as ws:
            df = ws.quarantine(None if status == "all" else status, reason)
            console.print(
                frame_table(
                    df[["q_id", "source", "row_number", "reason", "detail", "status"]],
                    f"{len(df):,} quarantined",
                    limit,
                )
            )

    @quarantine_app.command("replay")
    def quarantine_replay(
        reason: str | None = typer.Option(None, help="only this reason code"),
    ) -> None:
        """Re-validate open quarantined records against the current taxonomy."""
        with workspace() as ws:
            results = ws.replay_quarantine(reason)
            stored = sum(r.inserted for r in results)
            still = sum(r.quarantined for r in results)
            console.print(
                f"replayed {sum(r.rows_read for r in results):,}: stored {stored:,}, still invalid {still:,}"
            )

    @profiles_app.command("show")
    def profiles_show(
        ref: str = typer.Argument(..., help="profile id, id key (user_id:123) or id value"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """One profile: identities, traits and recent events."""
        with workspace() as ws:
            view = ws.profile_view(ref)
            if as_json:
                console.print_json(json.dumps(view, default=str))
                return
            console.print(f"[bold]{view['profile_id']}[/bold]")
            for key, value in view.get("traits", {}).items():
                console.print(f"  {key}: {value}")
            console.print(frame_table(ws.identities(ref), "identities"))
            console.print(frame_table(ws.events(ref, limit=10), "latest events", 10))
