"""CLI: ``microseg bench`` — the whole pipeline measured on synthetic data, as a table and JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from microseg.cli import console, frame_table


def _size(text: str) -> int:
    """``1M``, ``10m``, ``250k`` or a plain number."""
    value = text.strip().lower().replace("_", "").replace(",", "")
    scale = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(value[-1:], 1)
    number = value[:-1] if scale != 1 else value
    try:
        return int(float(number) * scale)
    except ValueError:
        raise typer.BadParameter(f"not a size: {text!r} (use e.g. 1M, 250k, 100000)") from None


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        sizes: str = typer.Option("1M", help="comma-separated event counts, e.g. 1M,10M,100M"),
        steps: str = typer.Option(
            "import,traits,segments,realtime,decide", help="which steps to run (import first)"
        ),
        events_per_profile: int = typer.Option(10, help="profiles = events / this"),
        workdir: Path = typer.Option(
            Path(".microseg-bench"), help="cached data and temporary projects"
        ),
        memory_limit: str | None = typer.Option(None, help="DuckDB memory cap, e.g. 4GB"),
        pandas_max: str = typer.Option("10M", help="skip the pandas twins above this size"),
        realtime_events: int = typer.Option(20_000, help="events fed to the real-time evaluator"),
        decide_seconds: float = typer.Option(10.0, help="seconds of decision-API load"),
        connections: int = typer.Option(16, help="concurrent connections for the load"),
        seed: int = typer.Option(1, help="synthetic data seed"),
        keep: bool = typer.Option(False, help="keep the generated projects"),
        json_out: Path | None = typer.Option(None, "--json", help="write the results here"),
    ) -> None:
        """Measure import, traits, 20 segments, real-time updates and the decision API."""
        from microseg.bench import BenchOptions, run_bench
        from microseg.bench.runner import rows
        from microseg.console import RichProgress, SilentProgress

        options = BenchOptions(
            sizes=[_size(s) for s in sizes.split(",") if s.strip()],
            steps=[s.strip() for s in steps.split(",") if s.strip()],
            events_per_profile=events_per_profile,
            workdir=workdir,
            memory_limit=memory_limit,
            pandas_max=_size(pandas_max),
            realtime_events=realtime_events,
            decide_seconds=decide_seconds,
            connections=connections,
            seed=seed,
            keep=keep,
        )
        interactive = sys.stderr.isatty() or os.environ.get("MICROSEG_PROGRESS")
        report = run_bench(options, RichProgress() if interactive else SilentProgress())
        import pandas as pd

        frame = pd.DataFrame(rows(report)).drop(columns=["pandas_s", "floor_s"])
        for col, fmt in (
            ("events", "{:,}"),
            ("seconds", "{:.2f}"),
            ("peak_rss_mb", "{:,.0f}"),
            ("x_pandas", "{:.1f}x"),
            ("x_floor", "{:.0f}x"),
        ):
            frame[col] = [None if pd.isna(v) else fmt.format(v) for v in frame[col]]
        frame = frame.rename(columns={"peak_rss_mb": "peak MB", "x_pandas": "vs pandas"})
        frame = frame.rename(columns={"x_floor": "vs floor"})
        title = (
            f"microseg bench: {report['machine']['cpus']} cpus, memory bandwidth "
            f"{report['bandwidth_gb_s']:.1f} GB/s"
        )
        console.print(frame_table(frame, title=title, limit=None))
        console.print(
            "vs pandas = pandas seconds / ours (same work, same data); vs floor = our seconds /"
            " the time to stream the decoded events once at the measured bandwidth"
        )
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2, default=str))
            console.print(f"wrote {json_out}")
