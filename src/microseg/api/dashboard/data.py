"""Reads behind the dashboard: overview, segments (size, trend, overlap), profiles and "why".

Every function takes a :class:`~microseg.workspace.Workspace`, runs light queries (aggregates,
LIMITs, bound parameters) and returns plain JSON-ready dicts, so the HTTP router stays a thin
shell and tests can compare the numbers with the library functions directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from microseg import segments as seg_api
from microseg.errors import MicrosegError, NotFoundError, did_you_mean
from microseg.segments.parse import parse_segment, project_segment_files
from microseg.workspace import Workspace

FREQS: dict[str, str] = {"D": "day", "W": "week", "M": "month"}
PANDAS_FREQ: dict[str, str] = {"D": "D", "W": "W-MON", "M": "MS"}  # date_trunc boundaries
MAX_OVERLAP_SEGMENTS = 30
EVENT_COLUMNS = ("ts", "event_type", "session_id", "source")


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN/NaT -> None, timestamps -> ISO text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (pd.Timestamp, datetime, date)):
        return value.isoformat()
    if isinstance(value, (str, int, bool)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-ready dicts."""
    return [jsonable(r) for r in df.to_dict(orient="records")]


def check_freq(freq: str) -> str:
    """The date_trunc unit of a D/W/M frequency (MicrosegError otherwise)."""
    if freq not in FREQS:
        raise MicrosegError(f"freq must be one of {sorted(FREQS)}, got {freq!r}")
    return FREQS[freq]


def _sizes(ws: Workspace) -> pd.DataFrame:
    return seg_api.sizes(ws)


def overview(ws: Workspace) -> dict[str, Any]:
    """Headline counts and every computed segment with its size."""
    sizes = _sizes(ws)
    experiments = int(ws.store.scalar("SELECT count(*) FROM experiments") or 0)
    return {
        "counts": {**ws.counts(), "segments": len(sizes), "experiments": experiments},
        "segments": records(sizes),
    }


def size_trend(ws: Workspace, segment: str | None = None, freq: str = "D") -> list[dict[str, Any]]:
    """Size at the end of each period from membership history (entered - exited, cumulated).

    Rows ``segment, period, entered, exited, size`` for every period from the first to the
    last change of any segment (sizes carried forward through quiet periods, 0 before a
    segment's first member); the last size equals the current membership count when the
    history is complete."""
    unit = check_freq(freq)
    df = ws.store.df(
        "SELECT segment, date_trunc(?, changed_at) AS period,"
        " count(*) FILTER (WHERE change = 'entered') AS entered,"
        " count(*) FILTER (WHERE change = 'exited') AS exited"
        " FROM membership_history WHERE ? IS NULL OR segment = ?"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        [unit, segment, segment],
    )
    if df.empty:
        return []
    periods = pd.date_range(df["period"].min(), df["period"].max(), freq=PANDAS_FREQ[freq])
    wide = df.pivot_table(
        index="period", columns="segment", values=["entered", "exited"], aggfunc="sum"
    ).reindex(periods, fill_value=0)
    wide = wide.fillna(0).astype("int64")
    size = (wide["entered"] - wide["exited"]).cumsum()
    long = pd.DataFrame(
        {
            "entered": wide["entered"].stack(),
            "exited": wide["exited"].stack(),
            "size": size.stack(),
        }
    )
    long.index = long.index.set_names(["period", "segment"])
    out = long.reset_index().sort_values(["segment", "period"], ignore_index=True)
    return records(out[["segment", "period", "entered", "exited", "size"]])


def overlap_matrix(ws: Workspace, limit: int = MAX_OVERLAP_SEGMENTS) -> dict[str, Any]:
    """Square overlap matrices (profiles in both, Jaccard) of the largest ``limit`` segments."""
    sizes = _sizes(ws)
    sizes = sizes[sizes["size"] > 0].sort_values(["size", "segment"], ascending=[False, True])
    names = sorted(str(n) for n in sizes["segment"].head(limit))
    idx = {n: i for i, n in enumerate(names)}
    size_of = dict(zip(sizes["segment"].astype(str), sizes["size"].astype(int), strict=True))
    both = [[size_of[a] if a == b else 0 for b in names] for a in names]
    jaccard = [[1.0 if a == b else 0.0 for b in names] for a in names]
    if len(names) > 1:
        for row in seg_api.overlap(ws, names).itertuples(index=False):
            i, j = idx[str(row.segment_a)], idx[str(row.segment_b)]
            both[i][j] = both[j][i] = int(row.both)
            jaccard[i][j] = jaccard[j][i] = float(row.jaccard)
    return {"segments": names, "both": both, "jaccard": jaccard}


def segments_page(ws: Workspace, freq: str = "D") -> dict[str, Any]:
    """Sizes, size trends and the overlap matrix of every computed segment."""
    return {
        "segments": records(_sizes(ws)),
        "trend": size_trend(ws, None, freq),
        "overlap": overlap_matrix(ws),
    }


def definition(ws: Workspace, name: str) -> dict[str, Any]:
    """The definition that produced the stored memberships, else the project file's."""
    row = ws.store.rows("SELECT definition FROM segments WHERE name = ?", [name])
    if row:
        found: dict[str, Any] = json.loads(row[0][0])
        return found
    for path in project_segment_files(ws.project.root):
        if path.stem == name:
            return seg_api.to_dict(parse_segment(path.read_text(), file=f"segments/{name}.yaml"))
    known = [str(n) for n in _sizes(ws)["segment"]]
    raise NotFoundError(f"no segment '{name}'{did_you_mean(name, known)}")


def segment_detail(
    ws: Workspace, name: str, *, freq: str = "D", sample: int = 25
) -> dict[str, Any]:
    """Definition, size, status, size trend and a sample of the newest members."""
    spec = definition(ws, name)
    sizes = _sizes(ws)
    row = sizes[sizes["segment"] == name]
    info = records(row)[0] if len(row) else {"segment": name, "size": 0, "status": "not computed"}
    members = ws.store.df(
        "SELECT profile_id, entered_at FROM memberships WHERE segment = ?"
        " ORDER BY entered_at DESC, profile_id LIMIT ?",
        [name, sample],
    )
    return {
        **info,
        "description": spec.get("description"),
        "definition": spec,
        "trend": size_trend(ws, name, freq),
        "members": records(members),
    }


def find_profiles(ws: Workspace, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Profiles matching a reference exactly (id, ``type:value``, value) or by id-value prefix."""
    query = query.strip()
    if not query:
        return []
    try:
        pid = ws.profile_id(query)
        key = ws.store.scalar("SELECT min(id_key) FROM identities WHERE profile_id = ?", [pid])
        return [{"profile_id": pid, "id_key": key if key is not None else pid}]
    except NotFoundError:
        pass
    rows = ws.store.df(
        "SELECT min(id_key) AS id_key, profile_id FROM identities"
        " WHERE starts_with(lower(id_value), lower(?)) GROUP BY profile_id"
        " ORDER BY profile_id LIMIT ?",
        [query, limit],
    )
    return records(rows[["profile_id", "id_key"]])


def profile_page(ws: Workspace, ref: str, events: int = 20) -> dict[str, Any]:
    """Traits, attributes, identities, memberships and recent events of one profile."""
    view = ws.profile_view(ref)
    pid = view["profile_id"]
    member = ws.store.df(
        "SELECT segment, entered_at FROM memberships WHERE profile_id = ? ORDER BY segment",
        [pid],
    )
    recent = ws.events(pid, limit=events)
    keep = [c for c in recent.columns if c not in ("id_key", "received_at", "email_token")]
    rows = [
        {k: v for k, v in r.items() if v is not None or k in EVENT_COLUMNS}
        for r in records(recent[keep])
    ]
    known = sorted(str(n) for n in _sizes(ws)["segment"])
    return {
        **jsonable(view),
        "memberships": records(member),
        "segments": sorted(str(s) for s in member["segment"]),
        "all_segments": known,
        "events": rows,
    }


def explain(ws: Workspace, segment: str, ref: str) -> dict[str, Any]:
    """Why the profile is (not) in the segment: :func:`microseg.segments.explain` as JSON."""
    result = seg_api.explain(ws, segment, ref)
    return {**jsonable(result.to_dict()), "lines": result.lines()}
