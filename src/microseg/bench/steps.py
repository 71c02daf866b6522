"""The benchmark's steps. Each runs in a child process (``python -m microseg.bench.child``) so
its peak memory is its own; each returns a JSON-able dict with ``seconds`` (the timed part)."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from microseg.bench.segments import Frames, definitions, pandas_memberships

EVENT_COLUMNS = "profile_id, event_type, ts, session_id, product_id, category, price"


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (VmHWM: unlike ``ru_maxrss`` it is not
    inherited from the parent across fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def decoded_bytes(path: str | Path) -> int:
    """In-memory (Arrow, decoded) size of a Parquet file's rows: the bytes any engine must
    touch once. Measured on the first row group and scaled by the row count."""
    file = pq.ParquetFile(path)
    meta = file.metadata
    if meta.num_rows == 0:
        return 0
    first = file.read_row_group(0)
    return int(first.nbytes * meta.num_rows / max(first.num_rows, 1))


def _open(project: str, memory_limit: str | None) -> Any:
    from microseg.workspace import Workspace

    return Workspace.open(project, memory_limit=memory_limit or None)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


# --------------------------------------------------------------------------------- import
def step_import(args: dict[str, Any]) -> dict[str, Any]:
    """A fresh project, the 20 benchmark segments written to it, then the timed import."""
    from microseg.workspace import Workspace

    root = Path(args["project"])
    ws = Workspace.init(root, "bench", memory_limit=args.get("memory_limit") or None)
    try:
        seg_dir = root / "segments"
        for old in seg_dir.glob("*.yaml"):  # the init examples read traits the bench lacks
            old.unlink()
        for definition in definitions():
            (seg_dir / f"{definition['name']}.yaml").write_text(yaml.safe_dump(definition))
        result, wall, cpu = _timed(lambda: ws.import_events(args["events"]))
        counts = ws.counts()
    finally:
        ws.close()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "rows": result.rows_read,
        "inserted": result.inserted,
        "quarantined": result.quarantined,
        "profiles": counts.get("profiles"),
        "bytes": decoded_bytes(args["events"]),
    }


def step_import_pandas(args: dict[str, Any]) -> dict[str, Any]:
    """The same import in pandas: read, validate, coerce, dedup, sessionise, store in DuckDB."""
    import duckdb

    from microseg.config.project import Project

    declared = set(Project.load(args["project"]).settings.taxonomy.events)

    def work() -> int:
        df = pd.read_parquet(args["events"])
        for column in df.columns:
            if isinstance(df[column].dtype, pd.CategoricalDtype):
                df[column] = df[column].astype("string")
        df["ts"] = pd.to_datetime(df.pop("timestamp"), utc=True).dt.tz_localize(None)
        for column in ("price", "quantity", "cart_value"):
            df[column] = pd.to_numeric(df[column], errors="coerce")
        valid = (
            df["event_id"].notna()
            & df["event_type"].isin(declared)
            & df["ts"].notna()
            & df["user_id"].notna()
        )
        df = df[valid].drop_duplicates("event_id")
        df["id_key"] = "user_id:" + df["user_id"]
        df = df.sort_values(["id_key", "ts"], kind="stable")
        gap = df.groupby("id_key", sort=False)["ts"].diff() > pd.Timedelta(minutes=30)
        new = gap | df["id_key"].ne(df["id_key"].shift())
        df["session_id"] = df["id_key"] + ":" + new.cumsum().astype("string")
        con = duckdb.connect(str(Path(args["project"]) / "pandas.duckdb"))
        con.register("frame", df)
        con.execute("CREATE OR REPLACE TABLE events AS SELECT * FROM frame")
        con.close()
        return len(df)

    rows, wall, cpu = _timed(work)
    return {"seconds": wall, "cpu_seconds": cpu, "rows": rows}


# --------------------------------------------------------------------------------- traits
def step_traits(args: dict[str, Any]) -> dict[str, Any]:
    ws = _open(args["project"], args.get("memory_limit"))
    try:
        result, wall, cpu = _timed(lambda: ws.compute_traits(datetime.fromisoformat(args["as_of"])))
        checksum = ws.store.rows(
            "SELECT count(*), round(sum(spend_90d), 2), sum(product_views_7d) FROM traits"
        )[0]
    finally:
        ws.close()
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "rows": result.rows,
        "columns": len(result.columns),
        "checksum": [float(x or 0) for x in checksum],
    }


def step_traits_pandas(args: dict[str, Any]) -> dict[str, Any]:
    """The project's traits.yaml in plain pandas (``microseg.traits.reference``)."""
    from microseg.traits.compute import load_project_traits
    from microseg.traits.reference import pandas_traits

    ws = _open(args["project"], args.get("memory_limit"))
    try:
        traitset = load_project_traits(ws.project.root, ws.settings)
        events = ws.store.df("SELECT * FROM events")
        idents = ws.store.df("SELECT id_key, profile_id FROM identities")
        profiles = ws.store.df("SELECT profile_id FROM profiles")["profile_id"]
    finally:
        ws.close()
    as_of = datetime.fromisoformat(args["as_of"])
    out, wall, cpu = _timed(lambda: pandas_traits(traitset, as_of, events, idents, profiles))
    checksum = [
        float(len(out)),
        round(float(out["spend_90d"].sum()), 2),
        float(out["product_views_7d"].sum()),
    ]
    return {"seconds": wall, "cpu_seconds": cpu, "rows": len(out), "checksum": checksum}


# ------------------------------------------------------------------------------- segments
def step_segments(args: dict[str, Any]) -> dict[str, Any]:
    ws = _open(args["project"], args.get("memory_limit"))
    try:
        _, wall, cpu = _timed(lambda: ws.compute_segments(datetime.fromisoformat(args["as_of"])))
        sizes = dict(ws.store.rows("SELECT segment, count(*) FROM memberships GROUP BY segment"))
    finally:
        ws.close()
    return {"seconds": wall, "cpu_seconds": cpu, "segments": len(definitions()), "sizes": sizes}


def step_segments_pandas(args: dict[str, Any]) -> dict[str, Any]:
    """The 20 segments in pandas; compares every membership with what DuckDB stored."""
    ws = _open(args["project"], args.get("memory_limit"))
    try:
        events = ws.store.df(
            "SELECT i.profile_id, e.event_type, e.ts, e.session_id, e.product_id, e.category,"
            " e.price FROM events e JOIN identities i USING (id_key)"
        )
        traits = ws.store.df("SELECT * FROM traits").set_index("profile_id")
        stored = ws.store.df("SELECT segment, profile_id FROM memberships")
    finally:
        ws.close()
    frames = Frames(events, traits, datetime.fromisoformat(args["as_of"]))
    members, wall, cpu = _timed(lambda: pandas_memberships(frames))
    by_segment = stored.groupby("segment")["profile_id"].apply(set).to_dict()
    mismatched = {
        name: len(ids ^ by_segment.get(name, set()))
        for name, ids in members.items()
        if ids != by_segment.get(name, set())
    }
    return {
        "seconds": wall,
        "cpu_seconds": cpu,
        "sizes": {k: len(v) for k, v in members.items()},
        "mismatched": mismatched,
    }


# ------------------------------------------------------------------------------- realtime
def step_realtime(args: dict[str, Any]) -> dict[str, Any]:
    """Bootstrap the real-time evaluator, then feed fresh events one at a time."""
    from microseg.segments import RealtimeEvaluator
    from microseg.segments.parse import parse_segment

    as_of = datetime.fromisoformat(args["as_of"])
    ws = _open(args["project"], args.get("memory_limit"))
    try:
        segments = [parse_segment(d) for d in definitions()]
        rt, boot, _ = _timed(
            lambda: RealtimeEvaluator.from_store(
                ws.store, ws.settings, segments, start=as_of, history=True
            )
        )
        pids = [r[0] for r in ws.store.rows("SELECT profile_id FROM profiles USING SAMPLE 2000")]
    finally:
        ws.close()
    rng = np.random.default_rng(1)
    types = np.array(["product_view", "add_to_cart", "purchase", "email_click", "video_played"])
    n = int(args.get("events", 20_000))
    lat = np.empty(n)
    began = time.perf_counter()
    for k in range(n):
        event = {
            "profile_id": pids[int(rng.integers(len(pids)))],
            "event_type": str(types[int(rng.integers(len(types)))]),
            "ts": as_of + timedelta(seconds=k),
            "session_id": f"rt{k // 20}",
            "product_id": f"p{int(rng.integers(500))}",
            "category": "electronics",
            "price": float(rng.integers(5, 900)),
        }
        t = time.perf_counter()
        rt.on_event(event)
        lat[k] = time.perf_counter() - t
    elapsed = time.perf_counter() - began
    return {
        "seconds": elapsed,
        "bootstrap_seconds": boot,
        "events": n,
        "events_per_s": n / elapsed,
        "p50_ms": float(np.percentile(lat, 50) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


# --------------------------------------------------------------------------------- decide
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step_decide(args: dict[str, Any]) -> dict[str, Any]:
    """Start the API server on the project and load ``/v1/decide`` over loopback."""
    import httpx

    from microseg.api.keys import create_key
    from microseg.bench.load import decide_load

    ws = _open(args["project"], None)
    try:
        _, key = create_key(ws.store, ws.keys, "decision-reader", name="bench", rate_per_second=1e9)
        refs = [r[0] for r in ws.store.rows("SELECT profile_id FROM profiles USING SAMPLE 5000")]
    finally:
        ws.close()
    port = _free_port()
    began = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "microseg.api", "--project", args["project"], "--port", str(port)],
        env={**os.environ, "MICROSEG_API_REALTIME": "false"},
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.1)
        startup = time.perf_counter() - began
        result = decide_load(
            port, key, refs, float(args.get("seconds", 10)), int(args.get("connections", 16))
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    result["startup_seconds"] = startup
    result["seconds_loaded"] = result.pop("seconds")
    result["seconds"] = result["seconds_loaded"]
    return result


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "import": step_import,
    "import_pandas": step_import_pandas,
    "traits": step_traits,
    "traits_pandas": step_traits_pandas,
    "segments": step_segments,
    "segments_pandas": step_segments_pandas,
    "realtime": step_realtime,
    "decide": step_decide,
}
