"""CLI: ``report``, ``kpis show|metrics`` and ``campaigns status|check|pause|resume``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from microseg.cli import console, err_console, frame_table, workspace
from microseg.errors import DefinitionError, MicrosegError


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """User mistakes print ``Error: …`` on one line and exit 1."""
    try:
        yield
    except DefinitionError as exc:
        for p in exc.problems:
            err_console.print(f"Error: {p}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (MicrosegError, OSError) as exc:
        err_console.print(f"Error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    from microseg.segments.ast import to_naive_utc

    try:
        return to_naive_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(f"{option} must be an ISO 8601 time, got '{value}'") from None


def _fmt(value: Any) -> str:
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, pd.Timestamp):
        return f"{value:%Y-%m-%d}" if value == value.normalize() else str(value)
    return str(value)


def register(app: typer.Typer) -> None:
    """Add ``report``, ``kpis`` and ``campaigns`` to ``app``."""

    @app.command("report")
    def report(
        out: Path = typer.Option(Path("report"), "--out", help="output folder"),
        as_of: str | None = typer.Option(None, "--as-of", help="ISO time (default: now)"),
        freq: str = typer.Option("W", "--freq", help="KPI periods: D, W, M or Q"),
    ) -> None:
        """Write report.html (self-contained, inline PNGs) and the PNG charts into --out."""
        from microseg.report import build_report

        when = _time(as_of, "--as-of")
        with _one_line_errors(), workspace() as ws:
            path = build_report(ws, out, as_of=when, freq=freq)
        pngs = sorted(p.name for p in path.parent.glob("*.png"))
        console.print(f"wrote {path} and {len(pngs)} PNG chart(s)", highlight=False)

    kpi_app = typer.Typer(help="Segment KPIs over time.", no_args_is_help=True)
    app.add_typer(kpi_app, name="kpis")

    @kpi_app.command("metrics")
    def metrics() -> None:
        """List the KPIs and what they measure."""
        import pandas as pd

        from microseg.measure.kpis import METRICS

        df = pd.DataFrame({"metric": list(METRICS), "meaning": list(METRICS.values())})
        console.print(frame_table(df, "KPIs", limit=None))

    @kpi_app.command("show")
    def show(
        segment: list[str] = typer.Option(None, "--segment", "-s", help="segment (repeatable)"),
        metric: list[str] = typer.Option(None, "--metric", "-m", help="KPI (repeatable)"),
        freq: str = typer.Option("W", "--freq", help="D, W, M or Q"),
        start: str | None = typer.Option(None, "--start", help="ISO time"),
        end: str | None = typer.Option(None, "--end", help="ISO time (exclusive)"),
        as_of: str | None = typer.Option(None, "--as-of", help="ISO time (default: now)"),
        plot: Path | None = typer.Option(None, "--plot", help="chart file: .png or .html"),
        csv: Path | None = typer.Option(None, "--csv", help="write the long table as CSV"),
    ) -> None:
        """KPI values per period: one table per metric (periods x segments)."""
        from microseg.errors import NotFoundError, did_you_mean
        from microseg.measure.kpis import METRICS, kpi_series, segment_kpis

        times = {o: _time(v, o) for o, v in (("--start", start), ("--end", end))}
        when = _time(as_of, "--as-of")
        with _one_line_errors():
            chosen = list(metric or ["active_users", "conversion_rate", "revenue_per_user"])
            for m in chosen:
                if m not in METRICS:
                    raise NotFoundError(f"unknown KPI '{m}'{did_you_mean(m, list(METRICS))}")
            if plot is not None and len(chosen) != 1:
                raise MicrosegError("--plot draws one KPI: give exactly one --metric")
            with workspace() as ws:
                frame = segment_kpis(
                    ws.store,
                    segments=segment or None,
                    start=times["--start"],
                    end=times["--end"],
                    freq=freq,
                    as_of=when,
                    taxonomy=ws.settings.taxonomy,
                )
            for note in frame.attrs.get("notes", []):
                err_console.print(f"note: {note}", highlight=False, markup=False)
            if frame.empty:
                console.print("no events in the chosen window")
                return
            for m in chosen:
                wide = kpi_series(frame, m).reset_index()
                console.print(frame_table(wide.tail(30), f"{m} — {METRICS[m]}", cell=_fmt))
            if csv is not None:
                frame.to_csv(csv, index=False)
                console.print(f"wrote {csv}", highlight=False)
            if plot is not None:
                _write_plot(frame, chosen[0], plot)
                console.print(f"wrote {plot}", highlight=False)

    camp_app = typer.Typer(help="Campaign state and guard rules.", no_args_is_help=True)
    app.add_typer(camp_app, name="campaigns")

    @camp_app.command("status")
    def status() -> None:
        """Declared and recorded campaigns with status, share and last change."""
        with _one_line_errors(), workspace() as ws:
            df = _status_frame(ws)
        if df.empty:
            console.print("no campaigns (declare them in campaigns/*.yaml)")
            return
        console.print(frame_table(df, "Campaigns", limit=None, cell=_fmt))

    @camp_app.command("check")
    def check(
        apply: bool = typer.Option(False, "--apply", help="carry out the triggered actions"),
        as_of: str | None = typer.Option(None, "--as-of", help="ISO time (default: now)"),
    ) -> None:
        """Judge every guard rule; print what would be done (or do it with --apply)."""
        import pandas as pd

        from microseg.measure.guards import check_campaigns

        when = _time(as_of, "--as-of")
        with _one_line_errors(), workspace() as ws:
            outcomes, applied = check_campaigns(
                ws.store, ws.project.root, project=ws.project, as_of=when, apply=apply, actor="cli"
            )
        if not outcomes:
            console.print("no guard rules declared (campaigns/*.yaml, 'guards:')")
            return
        df = pd.DataFrame([o.to_dict() for o in outcomes])
        df["would_do"] = [o.action if o.triggered else "" for o in outcomes]
        cols = ["campaign", "rule", "description", "period", "value", "baseline", "users"]
        cols += ["triggered", "note", "would_do"]
        console.print(frame_table(df[cols], "Guard rules", limit=None, cell=_fmt))
        hits = sum(o.triggered for o in outcomes)
        if not apply:
            console.print(f"{hits} rule(s) triggered; dry run — pass --apply to act")
            return
        for a in applied:
            console.print(f"{a.campaign}: {a.rule} -> {a.action}: {a.result}", highlight=False)
        console.print(f"{hits} rule(s) triggered; {len(applied)} action(s) processed")

    @camp_app.command("pause")
    def pause(
        name: str = typer.Argument(..., help="campaign name"),
        reason: str = typer.Option("paused by hand", "--reason"),
    ) -> None:
        """Pause a campaign by hand (audited)."""
        _set_status(name, "paused", reason)

    @camp_app.command("resume")
    def resume(
        name: str = typer.Argument(..., help="campaign name"),
        reason: str = typer.Option("resumed by hand", "--reason"),
        share: float | None = typer.Option(None, "--share", help="new traffic share (0, 1]"),
    ) -> None:
        """Resume a paused or throttled campaign (audited)."""
        _set_status(name, "active", reason, share)


def _set_status(name: str, status: str, reason: str, share: float | None = None) -> None:
    from microseg.measure.guards import require_campaign, set_campaign_status

    with _one_line_errors(), workspace() as ws:
        require_campaign(ws.store, ws.project.root, name)
        set_campaign_status(ws.store, name, status, reason=reason, actor="cli", share=share)
    console.print(f"campaign {name}: {status}", highlight=False)


def _status_frame(ws: Any) -> Any:
    import pandas as pd

    from microseg.measure.guards import campaign_status, load_campaigns

    recorded = campaign_status(ws.store)
    declared = load_campaigns(ws.project.root, ws.project)
    rows = recorded.to_dict("records")
    seen = {r["campaign"] for r in rows}
    for name, spec in declared.items():
        if name not in seen:
            rows.append(
                {"campaign": name, "status": "active", "share": spec.share, "reason": "declared"}
            )
    for r in rows:
        found = declared.get(r["campaign"])
        r["guards"] = len(found.guards) if found else 0
        r["declared"] = found is not None
    cols = ["campaign", "status", "share", "guards", "declared", "reason", "changed_at"]
    cols.append("changed_by")
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values("campaign", ignore_index=True)


def _write_plot(frame: Any, metric: str, path: Path) -> None:
    from microseg.report.plots import kpi_plotly_html, plot_kpi, png_bytes

    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(png_bytes(plot_kpi(frame, metric)))
    elif suffix in {".html", ".htm"}:
        path.write_text(kpi_plotly_html(frame, metric), encoding="utf-8")
    else:
        raise MicrosegError(f"--plot file must end in .png or .html, got '{path.name}'")
