"""CLI: `microseg traits compute | list | show`."""

from __future__ import annotations

import json
from datetime import datetime

import typer
from rich.table import Table

from microseg.cli import console, workspace


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"--as-of expects an ISO time like 2024-05-01T12:00, got '{value}'"
        ) from None
    from microseg.traits.model import naive_utc

    return naive_utc(parsed)


def register(app: typer.Typer) -> None:
    traits_app = typer.Typer(help="Computed traits declared in traits.yaml.", no_args_is_help=True)
    app.add_typer(traits_app, name="traits")

    @traits_app.command("compute")
    def compute(
        as_of: str | None = typer.Option(
            None, "--as-of", help="evaluate as of this UTC time (default now)"
        ),
    ) -> None:
        """Recompute every trait for every profile and replace the traits table."""
        from microseg.traits import compute_traits, load_project_traits

        with workspace() as ws:
            traitset = load_project_traits(ws.project.root, ws.settings)
            result = compute_traits(ws.store, ws.settings, traitset, _as_of(as_of), ws.progress)
            ws.store.audit(
                ws.actor, "traits.compute", None, {"as_of": result.as_of, "rows": result.rows}
            )
            console.print(
                f"computed {len(result.columns)} trait columns for {result.rows:,} profiles "
                f"as of {result.as_of:%Y-%m-%d %H:%M:%S} in {result.seconds:.2f}s"
            )

    @traits_app.command("list")
    def list_() -> None:
        """Declared traits with their kind, type and last computation time."""
        from microseg.traits import load_project_traits, trait_catalog

        with workspace() as ws:
            traitset = load_project_traits(ws.project.root, ws.settings)
            catalog = trait_catalog(ws.store).set_index("name") if ws.store else None
            table = Table(title=f"{len(traitset)} traits")
            for column in ("name", "kind", "type", "as of", "description"):
                table.add_column(column, overflow="fold")
            for c in traitset.columns():
                row = (
                    catalog.loc[c.name] if catalog is not None and c.name in catalog.index else None
                )
                as_of = "" if row is None or row["as_of"] is None else str(row["as_of"])
                table.add_row(c.name, c.kind, c.dtype, as_of, c.description or "")
            console.print(table)

    @traits_app.command("show")
    def show(
        profile: str = typer.Argument(..., help="profile id, id key (user_id:123) or id value"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Stored trait values of one profile."""
        from microseg.traits import profile_traits

        with workspace() as ws:
            values = profile_traits(ws.store, ws.profile_id(profile))
            if as_json:
                console.print_json(json.dumps(values, default=str))
                return
            console.print(f"[bold]{values.pop('profile_id')}[/bold]")
            for key, value in values.items():
                console.print(f"  {key}: {value}", highlight=False)
