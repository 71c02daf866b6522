"""CLI: `microseg spark run` — the project's traits and segments on Spark SQL."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import typer

from microseg.cli import console, frame_table, workspace


def _as_of(value: str | None) -> datetime:
    from microseg.store import utcnow
    from microseg.traits.model import naive_utc

    if value is None:
        return utcnow()
    try:
        return naive_utc(datetime.fromisoformat(value))
    except ValueError:
        raise typer.BadParameter(
            f"--as-of expects an ISO time like 2024-05-01T12:00, got '{value}'"
        ) from None


def register(app: typer.Typer) -> None:
    spark_app = typer.Typer(
        help="Run traits and segments on Apache Spark (pip install 'microseg[spark]').",
        no_args_is_help=True,
    )
    app.add_typer(spark_app, name="spark")

    @spark_app.command("run")
    def run(
        events: list[str] | None = typer.Option(
            None,
            "--events",
            help="Parquet event files or globs (repeatable); default: the store's events",
        ),
        as_of: str | None = typer.Option(
            None, "--as-of", help="evaluate as of this UTC time (default now)"
        ),
        out: Path | None = typer.Option(
            None, "--out", help="output folder for traits/ and memberships/ (Parquet)"
        ),
        master: str = typer.Option("local[2]", "--master", help="Spark master URL"),
        shuffle_partitions: int = typer.Option(
            4, "--shuffle-partitions", min=1, help="spark.sql.shuffle.partitions"
        ),
        codegen: bool = typer.Option(
            True,
            "--codegen/--no-codegen",
            help="whole-stage code generation (off is faster on small data)",
        ),
        save: bool = typer.Option(
            False,
            "--save",
            help="also write the memberships to the store (history, sizes) like"
            " `segments compute`, so the API and campaigns use them",
        ),
    ) -> None:
        """Compute traits.yaml and segments/*.yaml on Spark and write the results as Parquet.

        Profiles, identities, CRM attributes, consents and model scores come from the
        project's store; events from the given Parquet files (same columns as the store's
        events table: event_id, event_type, ts, id_key, session_id, properties...).
        """
        from pyspark.sql import SparkSession

        from microseg.engines.spark import SparkEngine, local_session
        from microseg.segments.membership import save_memberships
        from microseg.segments.parse import load_segments, project_segment_files
        from microseg.traits import load_project_traits

        when = _as_of(as_of)
        with workspace() as ws:
            root = Path(ws.project.root)
            traitset = load_project_traits(root, ws.settings)
            segments, _ = load_segments(project_segment_files(root))
            target = out or root / "spark_out"
            owned = SparkSession.getActiveSession() is None
            spark = local_session(
                master=master, shuffle_partitions=shuffle_partitions, codegen=codegen
            )
            try:
                with tempfile.TemporaryDirectory(prefix="microseg-spark-") as scratch:
                    engine = SparkEngine(spark, ws.settings, Path(scratch))
                    engine.load_store(ws.store, events=events or None, with_traits=not traitset)
                    result = engine.run(traitset if len(traitset) else None, segments, when)
                    paths = result.write(target)
                    saved = (
                        save_memberships(ws.store, segments, result.membership_frame(), when)
                        if save
                        else None
                    )
            finally:
                if owned:
                    spark.stop()
            ws.store.audit(
                ws.actor,
                "spark.run",
                None,
                {"as_of": when, "segments": result.sizes, "out": str(target)},
            )
        sizes = pd.DataFrame({"segment": list(result.sizes), "size": list(result.sizes.values())})
        console.print(frame_table(sizes, title=f"{len(sizes)} segments", limit=None))
        for warning in result.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
        if saved is not None:
            for warning in saved.warnings:
                if warning not in result.warnings:
                    console.print(f"[yellow]warning:[/] {warning}")
            moved = sum(r.entered + r.exited for r in saved.runs)
            console.print(
                f"memberships saved to the store: {len(saved.runs)} segments,"
                f" {moved:,} entered/exited"
            )
        written = ", ".join(f"{k} -> {v}" for k, v in paths.items())
        console.print(
            f"spark run as of {when:%Y-%m-%d %H:%M:%S}: {len(traitset)} traits, "
            f"{len(segments)} segments in {sum(result.timings.values()):.1f}s; {written}"
        )
