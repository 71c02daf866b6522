"""CLI: segments validate / preview / compute / explain / history / list / overlap."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from microseg.cli import console, frame_table, workspace


def _as_of(value: str | None) -> datetime | None:
    if value is None:
        return None
    from microseg.segments.ast import to_naive_utc

    try:
        return to_naive_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"--as-of must be an ISO 8601 time, got '{value}'") from None


def select_segments(segs: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The named segments plus every segment they reference (transitively)."""
    from microseg.errors import NotFoundError, did_you_mean
    from microseg.segments.ast import SegmentRef, walk

    chosen: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in segs:
            raise NotFoundError(f"no segment '{name}'{did_you_mean(name, segs)}")
        chosen[name] = segs[name]
        todo.extend(n.segment for _, n in walk(segs[name].rule) if isinstance(n, SegmentRef))
    return chosen


def register(app: typer.Typer) -> None:
    """Add the ``segments`` command group to ``app``."""
    seg_app = typer.Typer(help="Segments: define, compute, explain.", no_args_is_help=True)
    app.add_typer(seg_app, name="segments")

    @seg_app.command("validate")
    def validate(
        files: list[Path] = typer.Argument(None, help="files (default: segments/*.yaml)"),
    ) -> None:
        """Check segment files: shape, names, references (file:line and cause on error)."""
        from microseg.cli import STATE
        from microseg.config.project import Project
        from microseg.config.yamlio import load_document
        from microseg.errors import DefinitionError
        from microseg.segments.parse import project_segment_files, validate_segment_file

        project = Project.load(STATE["project"])
        paths = files or project_segment_files(project.root)
        problems = []
        for path in paths:
            try:
                validate_segment_file(load_document(path), project)
            except DefinitionError as exc:
                problems.extend(exc.problems)
        if problems:
            raise DefinitionError(problems)
        console.print(f"[green]OK[/green]: {len(paths)} segment files valid")

    @seg_app.command("preview")
    def preview_cmd(
        file: Path = typer.Argument(..., help="a segment file"),
        as_of: str | None = typer.Option(None, "--as-of", help="ISO time (default: now)"),
        show_sql: bool = typer.Option(False, "--sql", help="print the generated SQL"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Size of a segment before saving it, with warnings and real-time eligibility."""
        from microseg.segments import load_segment, preview

        with workspace() as ws:
            p = preview(ws, load_segment(file), _as_of(as_of))
        if as_json:
            console.print_json(json.dumps(p.to_dict(), default=str))
            return
        console.print(f"[bold]{p.name}[/bold]: {p.size:,} of {p.population:,} profiles")
        rt = p.realtime
        console.print(
            f"  real-time on events: {', '.join(rt['realtime_events']) or '-'};"
            f" trait snapshot: {', '.join(rt['trait_snapshot']) or '-'}"
        )
        for item in rt["batch_only"]:
            console.print(f"  batch only (last snapshot): {item}")
        for w in p.warnings:
            console.print(f"  [yellow]warning:[/yellow] {w}")
        if show_sql:
            console.print(p.sql, highlight=False, markup=False)

    @seg_app.command("compute")
    def compute_cmd(
        names: list[str] = typer.Argument(None, help="only these segments (and what they use)"),
        as_of: str | None = typer.Option(None, "--as-of", help="ISO time (default: now)"),
        min_size: int | None = typer.Option(None, "--min-size", help="minimum members (k)"),
        refuse_small: bool = typer.Option(False, "--refuse-small", help="refuse segments below k"),
    ) -> None:
        """Compute every segment of the project; memberships and history are updated."""
        from microseg.segments import compute_segments

        with workspace() as ws:
            chosen = None
            if names:
                from microseg.segments.parse import load_segments, project_segment_files

                chosen = select_segments(
                    load_segments(project_segment_files(ws.project.root))[0], names
                )
            report = compute_segments(
                ws,
                segments=chosen,
                as_of=_as_of(as_of),
                min_size=min_size,
                on_small="refuse" if refuse_small else "warn",
            )
        df = report.frame()
        if not df.empty:
            df["seconds"] = df["seconds"].round(3)
            console.print(
                frame_table(df.drop(columns=["warning"]), f"as of {report.as_of:%Y-%m-%d %H:%M:%S}")
            )
        for w in report.warnings:
            console.print(f"[yellow]warning:[/yellow] {w}")
        console.print(f"{len(report.runs)} segments in {report.seconds:.2f} s")

    @seg_app.command("explain")
    def explain_cmd(
        segment: str = typer.Argument(..., help="segment name"),
        profile: str = typer.Argument(..., help="profile id or id key"),
        as_of: str | None = typer.Option(None, "--as-of", help="ISO time (default: now)"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Why a profile is (not) in a segment: each condition, its value, pass/fail."""
        from microseg.segments import explain

        with workspace() as ws:
            result = explain(ws, segment, profile, _as_of(as_of))
        if as_json:
            console.print_json(json.dumps(result.to_dict(), default=str))
            return
        for line in result.lines():
            console.print(line, highlight=False, markup=False)

    @seg_app.command("history")
    def history_cmd(
        segment: str = typer.Argument(..., help="segment name"),
        profile: str | None = typer.Option(None, "--profile", help="only this profile"),
        limit: int = typer.Option(50, help="rows to show"),
    ) -> None:
        """Entered / exited changes of a segment, with time and reason."""
        from microseg.segments import history

        with workspace() as ws:
            df = history(ws, segment, profile, limit)
        console.print(frame_table(df, f"{segment}: {len(df):,} changes", limit))

    @seg_app.command("from-cluster")
    def from_cluster_cmd(
        run: str = typer.Argument(..., help="a saved discovery run (`discover --save-run`)"),
        clusters: str = typer.Argument(..., help="cluster number(s), comma-separated"),
        name: str = typer.Option(..., "--name", help="the new segment's name"),
        force: bool = typer.Option(False, "--force", help="replace an existing file"),
    ) -> None:
        """Save discovered cluster(s) as a segment file (segments/<name>.yaml), then preview it."""
        from microseg.config.yamlio import load_document
        from microseg.discover.segments import cluster_segment, write_segment
        from microseg.segments import load_segment, preview
        from microseg.segments.parse import validate_segment_file

        try:
            numbers = [int(c) for c in clusters.split(",") if c.strip()]
        except ValueError:
            raise typer.BadParameter(f"clusters must be numbers, got {clusters!r}") from None
        with workspace() as ws:
            definition = cluster_segment(ws.store, run, numbers, name)
            path = write_segment(definition, ws.project.root / "segments", force=force)
            validate_segment_file(load_document(path), ws.project)
            p = preview(ws, load_segment(path))
        console.print(f"wrote {path}: {p.size:,} of {p.population:,} profiles")

    @seg_app.command("list")
    def list_cmd() -> None:
        """Saved segments and their sizes."""
        from microseg.segments import sizes

        with workspace() as ws:
            console.print(frame_table(sizes(ws), "segments"))

    @seg_app.command("overlap")
    def overlap_cmd(
        names: list[str] = typer.Argument(None, help="segments (default: all)"),
    ) -> None:
        """Pairwise overlap counts and Jaccard index."""
        from microseg.segments import overlap

        with workspace() as ws:
            df = overlap(ws, names or None)
        if not df.empty:
            df["jaccard"] = df["jaccard"].round(4)
        console.print(frame_table(df, "overlap"))
