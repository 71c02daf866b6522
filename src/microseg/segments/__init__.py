"""Segments: definition language, SQL compiler, batch + real-time membership, explain.

Library API (a Workspace, or a Store plus settings)::

    seg = load_segment("segments/cart_abandoners.yaml")
    select = compile_segment(seg, as_of)                # sqlglot SELECT of profile_id
    report = compute_segments(ws, as_of=as_of)          # memberships + history
    preview(ws, seg).size; explain(ws, "cart_abandoners", "p-1").lines()
    history(ws, "cart_abandoners"); overlap(ws)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from microseg.config.models import ProjectSettings
from microseg.segments import membership as _membership
from microseg.segments.ast import Segment, to_dict
from microseg.segments.catalog import Catalog, check_all, dependencies, find_cycle, realtime_report
from microseg.segments.compiler import compile_segment
from microseg.segments.explain import Explanation, Preview
from microseg.segments.explain import explain as _explain
from microseg.segments.explain import preview as _preview
from microseg.segments.membership import ComputeReport, SegmentRun, apply_changes, compute_segments
from microseg.segments.parse import (
    dump_segment,
    load_segment,
    load_segments,
    parse_segment,
    validate_segment_file,
)
from microseg.segments.realtime import MembershipChange, RealtimeEvaluator
from microseg.store import Store

__all__ = [
    "Catalog",
    "ComputeReport",
    "Explanation",
    "MembershipChange",
    "Preview",
    "RealtimeEvaluator",
    "Segment",
    "SegmentRun",
    "apply_changes",
    "check_all",
    "compile_segment",
    "compute_segments",
    "dependencies",
    "dump_segment",
    "explain",
    "find_cycle",
    "history",
    "load_segment",
    "load_segments",
    "overlap",
    "parse_segment",
    "preview",
    "realtime_report",
    "sizes",
    "to_dict",
    "validate_segment_file",
]


def _store(target: Any, settings: ProjectSettings | None) -> tuple[Store, ProjectSettings | None]:
    if isinstance(target, Store):
        return target, settings
    return target.store, settings or target.settings


def _project_segments(target: Any) -> dict[str, Segment]:
    """Segments of the workspace's project files, else those saved in the store."""
    project = getattr(target, "project", None)
    store, _ = _store(target, None)
    found = _membership.saved_segments(store)
    if project is not None:
        from microseg.segments.parse import project_segment_files

        files = project_segment_files(project.root)
        if files:
            found.update(load_segments(files)[0])
    return found


def _segment(target: Any, segment: Segment | str) -> tuple[Segment, dict[str, Segment]]:
    known = _project_segments(target)
    if isinstance(segment, Segment):
        return segment, {**known, segment.name: segment}
    if segment not in known:
        from microseg.errors import NotFoundError, did_you_mean

        raise NotFoundError(f"no segment '{segment}'{did_you_mean(segment, known)}")
    return known[segment], known


def preview(
    target: Any,
    segment: Segment | str | Mapping[str, Any],
    as_of: datetime | None = None,
    *,
    settings: ProjectSettings | None = None,
    min_size: int | None = None,
) -> Preview:
    """Size (and sample, warnings, SQL) of a segment before saving it."""
    store, settings = _store(target, settings)
    seg = parse_segment(segment) if isinstance(segment, Mapping) else segment
    seg, known = _segment(target, seg)
    return _preview(store, settings, seg, as_of, known, min_size=min_size)


def explain(
    target: Any,
    segment: Segment | str,
    profile_id: str,
    as_of: datetime | None = None,
    *,
    settings: ProjectSettings | None = None,
) -> Explanation:
    """Why ``profile_id`` is or is not in ``segment``: condition -> value -> pass/fail."""
    store, settings = _store(target, settings)
    seg, known = _segment(target, segment)
    if hasattr(target, "profile_id"):
        profile_id = target.profile_id(profile_id)
    return _explain(store, settings, seg, profile_id, as_of, known)


def history(
    target: Any, segment: str, profile_id: str | None = None, limit: int = 1000
) -> pd.DataFrame:
    """Entered / exited rows of a segment, newest first."""
    return _membership.history(_store(target, None)[0], segment, profile_id, limit)


def overlap(target: Any, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Pairwise overlap counts and Jaccard index between segments."""
    return _membership.overlap(_store(target, None)[0], names)


def sizes(target: Any) -> pd.DataFrame:
    """Saved segments with their current sizes."""
    return _membership.sizes(_store(target, None)[0])
