"""Build the demo project on real data and return a summary of what was done."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from microseg.console import Progress, SilentProgress
from microseg.errors import ConfigError
from microseg.ingest.pipeline import ImportResult
from microseg.workspace import Workspace

# Online Retail ends 2011-12-09; the REES46 slice covers 2019-10-01 00:00-02:50 UTC.
RETAIL_AS_OF = datetime(2011, 12, 10)
CLICKSTREAM_AS_OF = datetime(2019, 10, 1, 3, 0)
RETAIL_SEGMENTS = ("champions", "lapsed_big_spenders", "christmas_shoppers")
CLICKSTREAM_SEGMENTS = ("quick_cart_abandoners", "repeat_product_viewers")

ONLINE_RETAIL = Path("online_retail_uci") / "online_retail.csv.gz"
REES46 = Path("rees46_multicategory_oct2019_head") / "2019-Oct_head.csv.gz"


def find_data_dir(explicit: str | Path | None = None) -> Path:
    """The shared datasets folder: --data, $MICROSEG_DATA, or ../shared/data beside the repo."""
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("MICROSEG_DATA"):
        candidates.append(Path(os.environ["MICROSEG_DATA"]))
    here = Path(__file__).resolve()
    candidates += [p / "shared" / "data" for p in here.parents] + [
        Path.cwd() / ".." / "shared" / "data",
        Path.cwd() / "shared" / "data",
    ]
    for c in candidates:
        if (c / ONLINE_RETAIL).exists():
            return c.resolve()
    raise ConfigError(
        "demo data not found: expected online_retail_uci/ under ../shared/data; "
        "pass --data DIR or set MICROSEG_DATA"
    )


@dataclass
class DemoSummary:
    """What the demo built, for printing and for tests."""

    folder: Path
    imports: dict[str, ImportResult] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def write_project(folder: Path) -> None:
    """Write the demo microseg.yaml (and the default traits file) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pkg = resources.files("microseg.demo")
    (folder / "microseg.yaml").write_text((pkg / "project.yaml").read_text())
    traits = pkg / "traits.yaml"
    if traits.is_file():
        (folder / "traits.yaml").write_text(traits.read_text())
    for sub in ("segments", "content", "campaigns", "experiments"):
        (folder / sub).mkdir(exist_ok=True)
    seg_dir = pkg / "segments"
    if seg_dir.is_dir():
        for item in seg_dir.iterdir():
            if item.name.endswith(".yaml"):
                (folder / "segments" / item.name).write_text(item.read_text())
    (folder / ".gitignore").write_text(".microseg/\n")


def run_demo(
    folder: str | Path = "demo-project",
    *,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> DemoSummary:
    """Create the demo project, import both datasets and compute what the engine offers."""
    data = find_data_dir(data_dir)
    folder = Path(folder)
    write_project(folder)
    summary = DemoSummary(folder.resolve())
    with Workspace.open(folder, progress=progress or SilentProgress(), actor="demo") as ws:
        summary.imports["online_retail"] = ws.import_events(
            data / ONLINE_RETAIL, source="online_retail"
        )
        summary.imports["rees46"] = ws.import_events(data / REES46, source="rees46")
        summary.extras["identity"] = ws.resolve_identities()
        summary.extras["traits"] = ws.compute_traits(as_of=RETAIL_AS_OF)
        summary.extras["rfm_segments"] = ws.store.rows(
            "SELECT rfm, count(*) FROM traits WHERE rfm IS NOT NULL GROUP BY 1 ORDER BY 2 DESC"
        )
        summary.extras["engagement"] = ws.store.rows(
            "SELECT engagement_label, count(*) FROM traits WHERE engagement_label IS NOT NULL"
            " GROUP BY 1 ORDER BY 2 DESC"
        )
        summary.extras["interests"] = ws.store.rows(
            "SELECT tag, count(*) FROM (SELECT unnest(interests) AS tag FROM traits)"
            " GROUP BY 1 ORDER BY 2 DESC"
        )
        segments = _project_segments(ws)
        runs = []
        for names, as_of in (
            (RETAIL_SEGMENTS, RETAIL_AS_OF),
            (CLICKSTREAM_SEGMENTS, CLICKSTREAM_AS_OF),
        ):
            report = ws.compute_segments(as_of=as_of, segments=[segments[n] for n in names])
            runs += [(r.name, r.size, as_of) for r in report.runs if r.name in names]
        summary.extras["segments"] = runs
        summary.extras["quality"] = ws.quality_report()
        summary.counts = ws.counts()
        summary.extras["top_countries"] = ws.store.rows(
            "SELECT country, count(*) AS lines FROM events WHERE country IS NOT NULL"
            " GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
        )
        summary.extras["event_types"] = ws.store.rows(
            "SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"
        )
        summary.extras["distinct_customers"] = int(
            ws.store.scalar(
                "SELECT count(DISTINCT user_id) FROM events WHERE source = 'online_retail'"
            )
        )
    return summary


def _project_segments(ws: Workspace) -> dict[str, Any]:
    from microseg.segments.parse import load_segments, project_segment_files

    segments, _ = load_segments(project_segment_files(ws.project.root))
    return segments
