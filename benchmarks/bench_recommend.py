"""Offline evaluation of the recommenders on the real datasets, with timings.

    python benchmarks/bench_recommend.py [--data ../shared/data] [--reps 1000] [--plot out.png]

1. UCI Online Retail, temporal split at 2011-09-01 (train: 9 months, test: the last 3 months,
   including the Christmas season). Segment popularity uses segments computed AS OF the cutoff
   (the demo's RFM segments, one segment per RFM label and per top country); category affinity
   uses a product type derived from the description (its last word: HOLDER, BAG, MUG…), since
   the data has no category column.
   Blend weights are chosen on a validation split (cutoff 2011-06-01, 3-month horizon ending
   at the real cutoff), never on the test period.
2. The REES46 slice (2 h 50 min of clickstream): cutoff 02:35, test profiles = any interaction
   before the cutoff and a purchase after it. Tiny; reported for completeness.
3. Latency of ``recommendations_for`` (cached model) for single profiles.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from microseg.console import SilentProgress
from microseg.demo.run import ONLINE_RETAIL, REES46, find_data_dir, write_project
from microseg.personalize.recommend import make_recommender, recommendations_for
from microseg.personalize.recommend_data import ONLINE_RETAIL as RETAIL_MAP
from microseg.personalize.recommend_data import REES46 as REES_MAP
from microseg.personalize.recommend_data import load_interactions
from microseg.personalize.recommend_eval import EvalReport, evaluate, plot_recall, temporal_split
from microseg.personalize.recommend_similar import (
    BlendedRecommender,
    CategoryAffinityRecommender,
    ItemCooccurrenceRecommender,
    SegmentPopularityRecommender,
)
from microseg.personalize.recommenders import (
    AbandonedCartRecommender,
    BuyAgainRecommender,
    PopularityRecommender,
    RecentlyViewedRecommender,
)
from microseg.segments.parse import load_segments, project_segment_files
from microseg.workspace import Workspace

RETAIL_CUTOFF = datetime(2011, 9, 1)
# REES46: almost all traffic is 02:10-02:50 (1,204 events before 02:00), so cut at 02:35
REES_CUTOFF = datetime(2019, 10, 1, 2, 35)
VALIDATION_CUTOFF = datetime(2011, 6, 1)  # blend weights chosen on Jun-Aug, reported on Sep-Dec


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _segments_as_of(ws: Workspace, cutoff: datetime) -> list[str]:
    """Traits and segments computed as of the cutoff (no leakage into the evaluation)."""
    ws.compute_traits(as_of=cutoff)
    seg_dir = ws.project.root / "segments"
    for path in seg_dir.glob("*.yaml"):
        if path.stem not in ("champions", "lapsed_big_spenders", "christmas_shoppers"):
            path.unlink()
    labels = [r[0] for r in ws.store.rows("SELECT DISTINCT rfm FROM traits WHERE rfm IS NOT NULL")]
    countries = [
        r[0]
        for r in ws.store.rows(
            "SELECT home_country FROM traits WHERE home_country IS NOT NULL"
            " GROUP BY 1 ORDER BY count(*) DESC LIMIT 8"
        )
    ]
    for trait, values in (("rfm", labels), ("home_country", countries)):
        for value in values:
            name = f"{trait}_{_slug(value)}"
            (seg_dir / f"{name}.yaml").write_text(
                f"name: {name}\nrule:\n  trait: {trait}\n  eq: {value!r}\n"
            )
    segments, _ = load_segments(project_segment_files(ws.project.root))
    ws.compute_segments(as_of=cutoff, segments=list(segments.values()))
    return sorted(segments)


def _print(report: EvalReport, title: str) -> None:
    print(f"\n## {title}\n")
    print("sizes:", report.sizes)
    for mode in ("new", "all"):
        df = report.table(mode).drop(columns="mode")
        if not df.empty:
            print(f"\n### {mode} items\n")
            print(df.to_string(index=False))
    print("\n### recall bootstrap 95% CI (profiles resampled; diff = paired vs popularity)\n")
    print(report.intervals.round(4).to_string(index=False))
    fits = {k: round(v, 2) for k, v in report.timings.items()}
    print("\nwall seconds (loaded 2-core machine):", fits)


def online_retail(data: Path, work: Path, reps: int, plot: Path | None) -> None:
    folder = work / "retail"
    write_project(folder)
    with Workspace.open(folder, progress=SilentProgress(), actor="bench") as ws:
        started = time.perf_counter()
        ws.import_events(data / ONLINE_RETAIL, source="online_retail")
        ws.resolve_identities()
        print(f"import + identities: {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        names = _segments_as_of(ws, RETAIL_CUTOFF)
        print(f"traits + {len(names)} segments as of cutoff: {time.perf_counter() - started:.1f} s")
        info = load_interactions(ws.store, RETAIL_CUTOFF, RETAIL_MAP).item_info()
        kind = info["name"].dropna().str.upper().str.extract(r"([A-Z]+)\W*$")[0]
        print(
            f"product types from names: {kind.nunique()} (e.g. {kind.value_counts().head(5).to_dict()})"
        )

        def category() -> CategoryAffinityRecommender:
            return CategoryAffinityRecommender(categories=kind, half_life_days=60)

        def blend(w: tuple[float, float, float, float]) -> BlendedRecommender:
            return BlendedRecommender(
                [
                    (ItemCooccurrenceRecommender(), w[0]),
                    (category(), w[1]),
                    (SegmentPopularityRecommender(ws.store, strict_as_of=False), w[2]),
                    (PopularityRecommender(), w[3]),
                ]
            )

        weights = choose_blend(ws, blend)
        builders = {
            "popularity": PopularityRecommender,
            "popularity_recent_30d": lambda: PopularityRecommender(half_life_days=30),
            "cooccurrence": ItemCooccurrenceRecommender,
            # lift needs a high support floor (rare pairs get huge lifts); 60 won on validation
            "cooccurrence_lift": lambda: ItemCooccurrenceRecommender(
                similarity="lift", min_support=60
            ),
            "basket_cooccurrence": lambda: ItemCooccurrenceRecommender(unit="basket"),
            "category_affinity": category,
            "segment_popularity": lambda: SegmentPopularityRecommender(ws.store),
            "buy_again": BuyAgainRecommender,
            "blend": lambda: blend(weights),
            "default_blend": lambda: make_recommender("blend", ws.store),
        }
        started = time.perf_counter()
        report = evaluate(ws.store, RETAIL_CUTOFF, builders, mapping=RETAIL_MAP, reps=reps)
        _print(
            report,
            f"Online Retail, cutoff {RETAIL_CUTOFF:%Y-%m-%d} ({time.perf_counter() - started:.0f} s)",
        )
        if plot:
            print("plot:", plot_recall(report, plot))
        latency(ws, report)


GRID = [
    (1.5, 0.5, 0.5, 0.25),
    (1.0, 0.0, 0.0, 0.0),
    (1.0, 0.25, 0.0, 0.0),
    (1.0, 0.5, 0.25, 0.1),
    (1.0, 1.0, 0.0, 0.0),
]


def choose_blend(ws: Workspace, blend: Any) -> tuple[float, float, float, float]:
    """Blend weights (cooccurrence, category, segment, popularity) with the best recall@10 on
    the validation split. Segments here are computed as of the final cutoff, later than the
    validation cutoff: the segment weight is chosen with that (small) advantage."""
    started = time.perf_counter()
    split = temporal_split(
        ws.store, VALIDATION_CUTOFF, RETAIL_MAP, horizon=RETAIL_CUTOFF - VALIDATION_CUTOFF
    )
    builders = {str(w): (lambda w=w: blend(w)) for w in GRID}
    report = evaluate(
        ws.store,
        VALIDATION_CUTOFF,
        builders,
        ks=(10,),
        mapping=RETAIL_MAP,
        reps=10,
        modes=("new", "all"),
        split=split,
    )
    table = report.summary.pivot(index="strategy", columns="mode", values="recall")
    print(
        f"\nvalidation (cutoff {VALIDATION_CUTOFF:%Y-%m-%d}, 3 months) recall@10 per blend weights"
        f" (cooccurrence, category, segment, popularity); {time.perf_counter() - started:.0f} s"
    )
    print(table.round(4).to_string())
    best = table.drop(index="popularity", errors="ignore")["new"].idxmax()
    print("chosen:", best)
    return next(w for w in GRID if str(w) == best)


def latency(ws: Workspace, report: EvalReport) -> None:
    profiles = list(pd.unique(report.per_profile["profile_id"]))[:50]
    started = time.perf_counter()
    recommendations_for(ws.store, profiles[0], 5, as_of=RETAIL_CUTOFF, mapping=RETAIL_MAP)
    cold = time.perf_counter() - started
    times = []
    for pid in profiles:
        started = time.perf_counter()
        recommendations_for(ws.store, pid, 5, as_of=RETAIL_CUTOFF, mapping=RETAIL_MAP)
        times.append(time.perf_counter() - started)
    print(
        f"\nrecommendations_for (blend): first call (fit) {cold:.2f} s, then median "
        f"{1000 * statistics.median(times):.1f} ms, max {1000 * max(times):.1f} ms per profile"
    )


def rees46(data: Path, work: Path, reps: int) -> None:
    folder = work / "rees"
    write_project(folder)
    with Workspace.open(folder, progress=SilentProgress(), actor="bench") as ws:
        ws.import_events(data / REES46, source="rees46")
        ws.resolve_identities()
        session_cooc = {"unit": "basket", "include_views": True, "half_life_days": None}
        builders = {
            "popularity": PopularityRecommender,
            "recently_viewed": RecentlyViewedRecommender,
            "abandoned_cart": AbandonedCartRecommender,
            "category_affinity": CategoryAffinityRecommender,
            "session_cooccurrence": lambda: ItemCooccurrenceRecommender(**session_cooc),  # type: ignore[arg-type]
            "blend": lambda: BlendedRecommender(
                [
                    (AbandonedCartRecommender(), 3.0),
                    (RecentlyViewedRecommender(), 2.0),
                    (ItemCooccurrenceRecommender(**session_cooc), 1.5),  # type: ignore[arg-type]
                    (CategoryAffinityRecommender(), 1.0),
                    (PopularityRecommender(), 0.25),
                ]
            ),
        }
        report = evaluate(
            ws.store, REES_CUTOFF, builders, ks=(5, 10, 20), mapping=REES_MAP, reps=reps, warm="any"
        )
        _print(report, f"REES46 slice, cutoff {REES_CUTOFF:%H:%M}, warm = any interaction")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None)
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--skip-rees46", action="store_true")
    args = parser.parse_args()
    data = find_data_dir(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-rec-") as tmp:
        online_retail(data, Path(tmp), args.reps, args.plot)
        if not args.skip_rees46:
            rees46(data, Path(tmp), args.reps)


if __name__ == "__main__":
    main()
