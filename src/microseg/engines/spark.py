"""Run the same trait and segment definitions on Spark SQL (PySpark, local or a cluster).

``SparkEngine`` registers the store's tables as Spark temp views (exported to Parquet through
Arrow, or events read from existing Parquet files), renders the SAME sqlglot trees the DuckDB
path builds (``compile_traits``, ``events_query``, ``compile_segment``) in the Spark dialect
after the rewrites of ``engines.dialect``, and runs traits then segments. Results come back as
Spark DataFrames (``traits``, ``memberships``) and, on request, as pandas frames.

PySpark is an optional extra (``pip install microseg[spark]``) and needs Java 17+.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq
from sqlglot import exp

from microseg.config.models import ProjectSettings
from microseg.errors import ConfigError, MicrosegError
from microseg.segments.ast import Segment
from microseg.segments.catalog import SCORE_PREFIX, Catalog, check_all
from microseg.segments.compiler import compile_segment
from microseg.segments.membership import _dependency_order, events_query
from microseg.store import Store
from microseg.store import sql as q
from microseg.traits.compiler import compile_traits
from microseg.traits.model import TraitSet, naive_utc

from .dialect import spark_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

STORE_TABLES = ("events", "identities", "profiles", "profile_attributes", "consents", "scores")
EVENTS_VIEW = "_segment_events"
SPARK_TYPES = {
    "string": "VARCHAR",
    "bigint": "BIGINT",
    "int": "INTEGER",
    "smallint": "SMALLINT",
    "double": "DOUBLE",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "timestamp_ntz": "TIMESTAMP",
    "date": "DATE",
}


class SparkUnavailable(MicrosegError):
    """PySpark or Java is missing (install ``microseg[spark]`` and a Java 17+ runtime)."""


def unavailable_reason() -> str | None:
    """Why Spark cannot run here (no pyspark, no java), or None when it can."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'microseg[spark]')"
    import os

    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and (Path(java_home) / "bin" / "java").exists()) and not shutil.which("java"):
        return "no Java runtime found (install Java 17+ or set JAVA_HOME)"
    return None


def local_session(
    cores: int = 2,
    shuffle_partitions: int = 4,
    app_name: str = "microseg",
    codegen: bool = True,
    driver_memory: str = "2g",
    master: str | None = None,
) -> SparkSession:
    """A Spark local-mode session configured like the parity suite expects (UTC, no UI).

    ``codegen=False`` turns whole-stage code generation off: slower on big data, but it
    saves the Java compilation of every query plan, which dominates on small test data.
    ``master`` overrides ``local[cores]`` (e.g. ``spark://host:7077``).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise SparkUnavailable(reason)
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(master or f"local[{cores}]")
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(cores))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        # DuckDB semantics: x / 0 is NULL and a failed CAST is an error we never rely on
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.codegen.wholeStage", str(codegen).lower())
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@dataclass
class SparkRun:
    """What one Spark run computed (Spark DataFrames; ``frames`` turns them into pandas)."""

    as_of: datetime
    traits: DataFrame | None
    memberships: DataFrame
    sizes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def write(self, out: Path) -> dict[str, Path]:
        """Write traits and memberships as Parquet folders under ``out`` (replaced)."""
        paths: dict[str, Path] = {}
        if self.traits is not None:
            paths["traits"] = out / "traits"
            self.traits.write.mode("overwrite").parquet(str(paths["traits"]))
        paths["memberships"] = out / "memberships"
        self.memberships.write.mode("overwrite").parquet(str(paths["memberships"]))
        return paths

    def trait_frame(self) -> pd.DataFrame:
        """Traits as pandas, ordered by profile id."""
        if self.traits is None:
            return pd.DataFrame()
        return to_pandas(self.traits).sort_values("profile_id", ignore_index=True)

    def membership_frame(self) -> pd.DataFrame:
        """Memberships as pandas (segment, profile_id), ordered."""
        frame = to_pandas(self.memberships.select("segment", "profile_id"))
        return frame.sort_values(["segment", "profile_id"], ignore_index=True)

    def member_sets(self) -> dict[str, set[str]]:
        """Segment name -> set of member profile ids (every computed segment present)."""
        found: dict[str, set[str]] = {name: set() for name in self.sizes}
        for row in self.memberships.select("segment", "profile_id").collect():
            found.setdefault(str(row["segment"]), set()).add(str(row["profile_id"]))
        return found


def to_pandas(df: DataFrame) -> pd.DataFrame:
    """A small Spark DataFrame as pandas (rows collected; timestamps naive UTC)."""
    rows = df.collect()
    return pd.DataFrame([r.asDict(recursive=True) for r in rows], columns=df.columns)


class SparkEngine:
    """Traits and segments of one project on a Spark session.

    ``workdir`` receives the Parquet exports of store tables (and is safe to delete after).
    """

    def __init__(self, spark: SparkSession, settings: ProjectSettings, workdir: Path) -> None:
        self.spark = spark
        self.settings = settings
        self.workdir = Path(workdir)
        self.views: set[str] = set()

    def materialize(self, df: DataFrame) -> DataFrame:
        """Compute ``df`` now and cut its lineage (a local checkpoint on the executors).

        Later queries then read a plain scan instead of re-planning (and re-matching against
        the cache) the whole query that produced it.
        """
        return df.localCheckpoint(eager=True)

    # -------------------------------------------------------------- loading data
    def register(self, name: str, df: DataFrame) -> DataFrame:
        """Register ``df`` as temp view ``name``; naive timestamps are read as UTC."""
        from pyspark.sql import functions as F
        from pyspark.sql.types import TimestampNTZType

        for f in df.schema.fields:
            if isinstance(f.dataType, TimestampNTZType):
                df = df.withColumn(f.name, F.col(f.name).cast("timestamp"))
        df.createOrReplaceTempView(name)
        self.views.add(name)
        return df

    def export_table(self, store: Store, name: str) -> DataFrame:
        """Copy one store table to ``workdir/<name>.parquet`` (through Arrow) and register it."""
        select = exp.select(exp.Star()).from_(q.table(name))
        with store.lock:  # own cursor: the shared connection may hold an unfinished result
            cursor = store.con.cursor()
            try:
                table = cursor.sql(q.render(select)).to_arrow_table()
            finally:
                cursor.close()
        path = self.workdir / f"{name}.parquet"
        self.workdir.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return self.register(name, self.spark.read.parquet(str(path)))

    def load_events(self, paths: str | Iterable[str]) -> DataFrame:
        """Read events from Parquet files (paths or globs) as the ``events`` view."""
        files = [paths] if isinstance(paths, str) else list(paths)
        if not files:
            raise ConfigError("no Parquet event files given")
        try:
            df = self.spark.read.parquet(*files)
        except Exception as exc:  # AnalysisException: path does not exist, not Parquet...
            raise ConfigError(
                f"cannot read events from {', '.join(files)}: {_first_line(exc)}"
            ) from None
        missing = {"event_type", "ts", "id_key"} - set(df.columns)
        if missing:
            raise ConfigError(f"event files lack the columns {sorted(missing)}")
        return self.register("events", df)

    def load_store(
        self,
        store: Store,
        *,
        events: str | Iterable[str] | None = None,
        tables: Iterable[str] = STORE_TABLES,
        with_traits: bool = False,
    ) -> None:
        """Register the store's tables; events come from ``events`` Parquet files when given.

        ``with_traits`` also registers the store's ``traits`` table (segments only, no trait
        computation on Spark).
        """
        wanted = list(tables) + (["traits"] if with_traits else [])
        for name in wanted:
            if name == "events" and events is not None:
                self.load_events(events)
            elif store.table_exists(name):
                self.export_table(store, name)
        self.ensure_event_columns()

    def ensure_event_columns(self) -> None:
        """Add the declared property columns the events lack (NULL), like the store does."""
        from pyspark.sql import functions as F

        if "events" not in self.views:
            raise ConfigError("no events registered; call load_store or load_events first")
        df = self.spark.table("events")
        have = set(df.columns)
        added = False
        for name, base in self.settings.taxonomy.property_columns().items():
            if name not in have:
                df = df.withColumn(name, F.lit(None).cast(q.dtype(base).sql(dialect="spark")))
                added = True
        for name in ("session_id", "event_id"):
            if name not in have:
                df = df.withColumn(name, F.lit(None).cast("string"))
                added = True
        if added:
            self.register("events", df)

    # -------------------------------------------------------------- running
    def sql(self, tree: exp.Expr) -> DataFrame:
        """Render a compiled tree for Spark and run it (lazily).

        Spark inlines every CTE at each reference, so a CTE read several times (the traits
        ``_agg`` is read by the scores, the ranks and each interest tag) would be recomputed;
        each CTE becomes a temp view instead, materialized when it is read more than once.
        """
        tree = tree.copy()
        with_ = tree.args.get("with_")
        if not isinstance(with_, exp.With):
            return self.spark.sql(spark_sql(tree))
        tree.set("with_", None)
        ctes = list(with_.expressions)
        for i, cte in enumerate(ctes):
            name = cte.alias_or_name
            later: list[exp.Expr] = [c.this for c in ctes[i + 1 :]] + [tree]
            uses = sum(1 for t in later for table in t.find_all(exp.Table) if table.name == name)
            df = self.spark.sql(spark_sql(cte.this))
            self.register(name, self.materialize(df) if uses > 1 else df)
        return self.spark.sql(spark_sql(tree))

    def compute_traits(self, traitset: TraitSet, as_of: datetime) -> DataFrame:
        """The traits of every live profile as of ``as_of``; registered as the ``traits`` view."""
        df = self.materialize(self.sql(compile_traits(traitset, naive_utc(as_of))))
        return self.register("traits", df)

    def catalog(self) -> Catalog:
        """Settings plus the trait columns and scored models registered on Spark."""
        cat = Catalog.from_settings(self.settings)
        traits: dict[str, str] = {}
        if "traits" in self.views:
            for f in self.spark.table("traits").schema.fields:
                if f.name != "profile_id":
                    traits[f.name] = spark_type_name(f.dataType.simpleString())
        if "scores" in self.views:
            for row in self.spark.table("scores").select("model").distinct().collect():
                traits[f"{SCORE_PREFIX}{row['model']}"] = "DOUBLE"
        cat.traits = traits
        return cat

    def compute_segments(
        self,
        segments: Mapping[str, Segment],
        as_of: datetime,
        min_size: int | None = None,
    ) -> tuple[DataFrame, dict[str, int], list[str]]:
        """Memberships (segment, profile_id) of every segment, in dependency order.

        Referenced segments read the memberships computed earlier in the run (like the
        DuckDB batch). Segments below their minimum size are kept and reported as warnings.
        """
        from pyspark.sql import functions as F

        as_of = naive_utc(as_of)
        catalog = self.catalog()
        check_all(dict(segments), catalog, None)
        have = self.spark.table("events").columns
        prepared = self.materialize(self.sql(events_query(segments.values(), as_of, have)))
        self.register(EVENTS_VIEW, prepared)
        parts: list[DataFrame] = []
        sizes: dict[str, int] = {}
        warnings: list[str] = []
        done: set[str] = set()
        for name in _dependency_order(segments):
            query = compile_segment(
                segments[name],
                as_of,
                catalog=catalog,
                segments=segments,
                events_source=EVENTS_VIEW,
                computed=frozenset(done),
            )
            found = self.sql(query).select(F.lit(name).alias("segment"), F.col("profile_id"))
            parts.append(self.materialize(found))
            done.add(name)
            self.register("memberships", reduce(lambda a, b: a.unionByName(b), parts))
        if not parts:
            empty = self.spark.createDataFrame([], "segment string, profile_id string")
            return empty, sizes, warnings
        counted = self.spark.table("memberships").groupBy("segment").count().collect()
        found_sizes = {str(r["segment"]): int(r["count"]) for r in counted}
        for name in done:
            sizes[name] = found_sizes.get(name, 0)
            limit = segments[name].min_size
            limit = limit if limit is not None else (min_size or 0)
            if sizes[name] < limit:
                warnings.append(
                    f"segment '{name}' has {sizes[name]} profiles, below the minimum of {limit}"
                )
        return self.spark.table("memberships"), dict(sorted(sizes.items())), sorted(warnings)

    def run(
        self,
        traitset: TraitSet | None,
        segments: Mapping[str, Segment],
        as_of: datetime,
        min_size: int | None = None,
    ) -> SparkRun:
        """Traits (when a trait set is given) then segments, as of ``as_of``."""
        timings: dict[str, float] = {}
        traits = None
        t0 = time.perf_counter()
        if traitset is not None and len(traitset):
            traits = self.compute_traits(traitset, as_of)
        elif "traits" in self.views:
            traits = self.spark.table("traits")
        timings["traits"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        members, sizes, warnings = self.compute_segments(segments, as_of, min_size)
        timings["segments"] = time.perf_counter() - t0
        return SparkRun(naive_utc(as_of), traits, members, sizes, warnings, timings)


def spark_type_name(simple: str) -> str:
    """A Spark simple type string as the upper-case SQL type name the catalog uses."""
    if simple.startswith("array<"):
        return spark_type_name(simple[len("array<") : -1]) + "[]"
    if simple.startswith("decimal"):
        return simple.upper()
    return SPARK_TYPES.get(simple, simple.upper())


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = [
    "EVENTS_VIEW",
    "STORE_TABLES",
    "SparkEngine",
    "SparkRun",
    "SparkUnavailable",
    "local_session",
    "spark_type_name",
    "to_pandas",
    "unavailable_reason",
]
