"""CLI: `microseg quality report|outliers` and `microseg synth`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from microseg.cli import console, workspace

STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "red", "info": "dim"}


def _fmt(value: float | None, name: str) -> str:
    if value is None:
        return "-"
    if name.endswith("_minutes"):
        return f"{value:,.1f} min"
    if name in {"anomalous_days", "days_without_sessions"}:
        return f"{value:,.0f}"
    return f"{value:.2%}"


def render_report(report: object) -> Table:
    """A Rich table of the report's metrics (one row each, coloured by verdict)."""
    from microseg.ingest.quality import QualityReport

    assert isinstance(report, QualityReport)
    start = report.start.isoformat(sep=" ") if report.start else "first event"
    t = Table(
        title=f"Data quality: {report.events:,} events, {start} → {report.as_of:%Y-%m-%d %H:%M} — {report.status.upper()}"
    )
    for c in ("section", "metric", "value", "status", "threshold", "detail"):
        t.add_column(c, overflow="fold")
    for m in report.metrics:
        style = STATUS_STYLE[m.status]
        t.add_row(
            m.section,
            m.name,
            _fmt(m.value, m.name),
            f"[{style}]{m.status}[/{style}]",
            m.threshold,
            m.detail,
        )
    return t


def register(app: typer.Typer) -> None:
    """Add `quality` (report, outliers) and `synth` to the CLI."""
    quality_app = typer.Typer(help="Data-quality metrics with thresholds.", no_args_is_help=True)
    app.add_typer(quality_app, name="quality")

    @quality_app.command("report")
    def quality_report_cmd(
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
        days: int | None = typer.Option(None, help="only the last N days before --as-of"),
        as_of: datetime | None = typer.Option(
            None, "--as-of", help="end of the period (default: latest event)"
        ),
        fail_on: str | None = typer.Option(
            None, "--fail-on", help="exit 1 when the status is at least warn|fail"
        ),
    ) -> None:
        """Completeness, validity, timeliness, duplicates, volume anomalies and outliers."""
        from microseg.ingest.quality import STATUS_ORDER, quality_report

        if fail_on is not None and fail_on not in {"warn", "fail"}:
            raise typer.BadParameter("--fail-on expects warn or fail")
        with workspace() as ws:
            report = quality_report(ws.store, ws.settings, as_of=as_of, days=days)
        if as_json:
            console.print_json(json.dumps(report.to_dict(), default=str))
        else:
            console.print(render_report(report))
            if not report.anomalies.empty:
                console.print(
                    f"{len(report.anomalies):,} anomalous (day, series) pairs; see --json for the list"
                )
        if fail_on and STATUS_ORDER[report.status] >= STATUS_ORDER[fail_on]:
            raise typer.Exit(1)

    @quality_app.command("outliers")
    def quality_outliers_cmd(
        sigma: float = typer.Option(3.0, help="distance from the mean in standard deviations"),
        save: bool = typer.Option(
            False, "--save", help="store the flags in quality_outliers (for exclusion)"
        ),
        limit: int = typer.Option(20, help="ids to show"),
    ) -> None:
        """Profiles whose activity is more than SIGMA standard deviations from the mean."""
        from microseg.ingest.quality import outlier_profiles

        with workspace() as ws:
            ids = outlier_profiles(ws.store, sigma=sigma, save=save)
        console.print(
            f"{len(ids):,} outlier profiles" + (" saved to quality_outliers" if save else "")
        )
        for pid in ids[:limit]:
            console.print(f"  {pid}")

    @app.command("synth")
    def synth_cmd(
        events: int = typer.Option(1_000_000, "--events", help="number of events"),
        profiles: int = typer.Option(100_000, "--profiles", help="number of profiles"),
        out: Path = typer.Option(Path("events.parquet"), "--out", help="Parquet file to write"),
        seed: int = typer.Option(0, help="random seed (same seed, same bytes)"),
        start: datetime = typer.Option(datetime(2024, 1, 1), help="first day (UTC)"),
        days: int = typer.Option(90, help="length of the period in days"),
        chunk_rows: int = typer.Option(1_000_000, help="rows per written chunk"),
    ) -> None:
        """Write a synthetic event stream with planted personas plus its ground truth."""
        from microseg.synth import generate_events

        if events < 0 or profiles < 1 or days < 1 or chunk_rows < 1:
            raise typer.BadParameter(
                "need --events >= 0, --profiles >= 1, --days >= 1, --chunk-rows >= 1"
            )
        r = generate_events(
            out, events, profiles, seed=seed, start=start, days=days, chunk_rows=chunk_rows
        )
        console.print(
            f"wrote {r.n_events:,} events of {r.n_profiles:,} profiles to {r.path} in {r.seconds:.1f}s"
        )
        console.print(
            f"ground truth: {r.truth_path} ({', '.join(f'{k} {v:,}' for k, v in r.persona_counts.items())})"
        )
