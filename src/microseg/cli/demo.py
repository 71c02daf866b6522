"""CLI: `microseg demo` builds a project from real data and prints a readable summary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.panel import Panel
from rich.table import Table

from microseg.cli import console


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        folder: Path = typer.Option(Path("demo-project"), help="where to build the demo project"),
        data: Path | None = typer.Option(None, help="datasets folder (default ../shared/data)"),
    ) -> None:
        """Build the demo project on Online Retail + REES46 and summarise it."""
        from microseg.console import RichProgress
        from microseg.demo import run_demo

        s = run_demo(folder, data_dir=data, progress=RichProgress())
        t = Table(title="Imports")
        for col in ("source", "read", "stored", "duplicates", "quarantined", "rows/s"):
            t.add_column(col, justify="right" if col != "source" else "left")
        for name, r in s.imports.items():
            t.add_row(
                name,
                f"{r.rows_read:,}",
                f"{r.inserted:,}",
                f"{r.duplicates:,}",
                f"{r.quarantined:,}",
                f"{r.rows_per_second:,.0f}",
            )
        console.print(t)
        for name, r in s.imports.items():
            for reason, n in r.reasons.items():
                console.print(f"  {name}: quarantined {n:,} × {reason}")
        counts = " · ".join(f"{k} {v:,}" for k, v in s.counts.items())
        console.print(Panel(counts, title="Store"))
        console.print(f"Online Retail distinct customers: {s.extras['distinct_customers']:,}")
        et = ", ".join(f"{k} {v:,}" for k, v in s.extras["event_types"])
        console.print(f"Event types: {et}")
        traits = s.extras["traits"]
        console.print(
            f"Traits: {len(traits.columns)} columns for {traits.rows:,} profiles as of "
            f"{traits.as_of:%Y-%m-%d} in {traits.seconds:.2f}s"
        )
        for title, key in (
            ("RFM segments", "rfm_segments"),
            ("Engagement", "engagement"),
            ("Interest tags", "interests"),
        ):
            console.print(f"  {title}: " + ", ".join(f"{k} {v:,}" for k, v in s.extras[key]))
        seg = Table(title="Segments")
        for col in ("segment", "members", "as of"):
            seg.add_column(col)
        for name, size, as_of in s.extras["segments"]:
            seg.add_row(name, f"{size:,}", f"{as_of:%Y-%m-%d %H:%M}")
        console.print(seg)
        quality = s.extras["quality"]
        flagged = [m for m in quality.metrics if m.status in ("warn", "fail")]
        console.print(f"Data quality: {quality.status} ({len(flagged)} metrics flagged)")
        for m in flagged[:6]:
            console.print(f"  {m.status:4} {m.section}/{m.name}: {m.detail or m.value}")
        console.print(
            f"Project written to [bold]{s.folder}[/bold]. Next: "
            f"`microseg -p {folder} segments explain champions user_id:17850`, "
            f"`microseg -p {folder} quality report`"
        )
