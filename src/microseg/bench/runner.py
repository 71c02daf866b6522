"""Orchestrates ``microseg bench``: data per size, each step in a child process, ratios, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from microseg.bench.bandwidth import floor_seconds, read_bandwidth
from microseg.console import Progress, SilentProgress
from microseg.errors import ConfigError, MicrosegError

MARKER = "BENCH-RESULT "  # the child prints its JSON result after this
STEP_ORDER = ("import", "traits", "segments", "realtime", "decide")
PANDAS_TWIN = {"import": "import_pandas", "traits": "traits_pandas", "segments": "segments_pandas"}
SYNTH_START = datetime(2024, 1, 1)
SYNTH_DAYS = 90


@dataclass
class BenchOptions:
    """What to measure. ``pandas_max`` skips the pandas twins above that many events."""

    sizes: list[int] = field(default_factory=lambda: [1_000_000])
    steps: list[str] = field(default_factory=lambda: list(STEP_ORDER))
    events_per_profile: int = 10
    workdir: Path = Path(".microseg-bench")
    memory_limit: str | None = None
    pandas_max: int = 10_000_000
    realtime_events: int = 20_000
    decide_seconds: float = 10.0
    connections: int = 16
    seed: int = 1
    keep: bool = False

    def check(self) -> None:
        unknown = [s for s in self.steps if s not in STEP_ORDER]
        if unknown:
            raise ConfigError(f"unknown bench step(s) {unknown}; choose from {list(STEP_ORDER)}")
        if not self.sizes or min(self.sizes) < 1_000:
            raise ConfigError("bench sizes must be at least 1000 events")
        if self.events_per_profile < 1:
            raise ConfigError("--events-per-profile must be >= 1")
        if "import" not in self.steps:
            raise ConfigError("every bench run starts with the import step (it builds the project)")


def run_child(step: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run one step in a fresh Python process; its JSON result (with its own peak RSS)."""
    proc = subprocess.run(
        [sys.executable, "-m", "microseg.bench.child", step, json.dumps(args)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        lines = (proc.stderr or proc.stdout or "no output").strip().splitlines()
        errors = [x for x in lines if "Error" in x or "error:" in x] or lines[-1:]
        raise MicrosegError(f"bench step {step!r} failed: {errors[-1].strip()}")
    result: dict[str, Any] = json.loads(lines[-1][len(MARKER) :])
    return result


def ensure_events(workdir: Path, n: int, profiles: int, seed: int) -> Path:
    """The cached synthetic Parquet file for ``n`` events."""
    from microseg.synth import generate_events

    path = workdir / f"synth_{n}_{profiles}_s{seed}.parquet"
    if not path.exists():
        tmp = path.with_suffix(".partial.parquet")
        generate_events(tmp, n, profiles, seed=seed, start=SYNTH_START, days=SYNTH_DAYS)
        tmp.replace(path)
        tmp.with_name(tmp.name.split(".")[0] + ".truth.parquet").unlink(missing_ok=True)
    return path


def machine() -> dict[str, Any]:
    """Facts that make figures comparable across runs."""
    import duckdb

    total = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    commit = None
    with contextlib.suppress(OSError):
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
                cwd=Path(__file__).resolve().parent,
            ).stdout.strip()
            or None
        )
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(total / 2**30, 1) if total else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "commit": commit,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _rates(step: str, result: dict[str, Any], n: int) -> None:
    seconds = result.get("seconds") or 0.0
    if step in ("import", "traits", "segments") and seconds:
        result["events_per_s"] = n / seconds
    if step == "decide":
        result.setdefault("rps", 0.0)


def run_bench(options: BenchOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Run every step at every size; returns the report (also what ``--json`` writes)."""
    options.check()
    progress = progress or SilentProgress()
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    progress.start("measuring memory bandwidth")
    bandwidth = read_bandwidth()
    progress.stop()
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "bandwidth_gb_s": bandwidth / 1e9,
        "runs": [],
    }
    as_of = SYNTH_START + timedelta(days=SYNTH_DAYS)
    for n in options.sizes:
        profiles = max(1, n // options.events_per_profile)
        progress.start(f"generating {n:,} events")
        events = ensure_events(workdir, n, profiles, options.seed)
        progress.stop()
        project = workdir / f"project_{n}"
        shutil.rmtree(project, ignore_errors=True)
        base: dict[str, Any] = {
            "project": str(project),
            "events": str(events),
            "as_of": as_of.isoformat(),
            "memory_limit": options.memory_limit,
        }
        run: dict[str, Any] = {"events": n, "profiles": profiles, "steps": {}}
        wanted = [s for s in STEP_ORDER if s in options.steps]
        twins = [s for s in wanted if s in PANDAS_TWIN and n <= options.pandas_max]
        progress.start(f"{n:,} events", total=len(wanted) + len(twins))
        nbytes = 0
        try:
            for step in wanted:
                progress.update(0, note=step)
                args = dict(base)
                if step == "realtime":
                    args["events"] = options.realtime_events
                if step == "decide":
                    args.update(seconds=options.decide_seconds, connections=options.connections)
                result = run_child(step, args)
                _rates(step, result, n)
                nbytes = int(result.get("bytes") or nbytes)
                if step in PANDAS_TWIN and nbytes:
                    result["floor_seconds"] = floor_seconds(nbytes, bandwidth)
                    result["x_floor"] = result["seconds"] / result["floor_seconds"]
                progress.update(1)
                if step in twins:
                    progress.update(0, note=f"{step} (pandas)")
                    twin = run_child(PANDAS_TWIN[step], base)
                    result["pandas"] = twin
                    result["x_pandas"] = twin["seconds"] / result["seconds"]
                    progress.update(1)
                run["steps"][step] = result
        finally:
            progress.stop()
            if not options.keep:
                shutil.rmtree(project, ignore_errors=True)
        report["runs"].append(run)
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (size, step) for printing."""
    out = []
    for run in report["runs"]:
        for step, r in run["steps"].items():
            rate = r.get("events_per_s") or r.get("rps")
            unit = "req/s" if step == "decide" else "ev/s"
            note = ""
            if step == "realtime":
                note = f"p99 {r['p99_ms']:.2f} ms/event; bootstrap {r['bootstrap_seconds']:.1f}s"
            elif step == "decide":
                note = f"p99 {r['p99_ms']:.1f} ms; {r.get('non2xx', 0)} non-2xx; {r['tool']}"
            elif step == "segments":
                mism = (r.get("pandas") or {}).get("mismatched")
                note = f"{r['segments']} segments" + (
                    "" if mism is None else ("; pandas agrees" if not mism else f"; DIFFERS {mism}")
                )
            elif step == "traits":
                twin = r.get("pandas")
                if twin is not None:
                    same = twin["checksum"] == r["checksum"]
                    note = "pandas agrees" if same else "pandas checksum differs"
            elif step == "import":
                note = f"{r['inserted']:,} stored, {r['quarantined']:,} quarantined"
            out.append(
                {
                    "events": run["events"],
                    "step": step,
                    "seconds": r["seconds"],
                    "rate": f"{rate:,.0f} {unit}" if rate else "",
                    "peak_rss_mb": r["peak_rss_mb"],
                    "pandas_s": (r.get("pandas") or {}).get("seconds"),
                    "x_pandas": r.get("x_pandas"),
                    "floor_s": r.get("floor_seconds"),
                    "x_floor": r.get("x_floor"),
                    "note": note,
                }
            )
    return out
