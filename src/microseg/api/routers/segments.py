"""Segment definitions over HTTP: list, read, preview, save, delete, compute, members, explain.

Definitions saved here are written as ``segments/<name>.yaml`` in the project, through the
same parser and validator as the files in git, so the CLI, the API and reviews see one truth.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from starlette.responses import Response

from microseg import segments as seg_api
from microseg.api.deps import AnalystKey, ServicesDep
from microseg.api.problems import ApiProblem
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES
from microseg.config.models import NAME_RE
from microseg.errors import NotFoundError
from microseg.segments.ast import Segment
from microseg.segments.parse import dump_segment, parse_segment, project_segment_files
from microseg.workspace import Workspace

router = APIRouter(prefix="/segments", tags=["segments"])
RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    404: {"description": "no such segment", "content": {"application/problem+json": {}}},
}

DefinitionBody = Annotated[
    dict[str, Any],
    Body(
        description="a segment definition, the same shape as segments/*.yaml",
        examples=[{"name": "big_spenders", "rule": {"trait": "rfm_monetary", "gte": 1000}}],
    ),
]
AsOf = Annotated[datetime | None, Query(description="evaluation time (UTC); default now")]


def _checked_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ApiProblem(
            422, "invalid-name", "segment names are lower_snake_case: letters, digits and _"
        )
    return name


def _segment_file(ws: Workspace, name: str) -> Path:
    return ws.project.root / "segments" / f"{_checked_name(name)}.yaml"


def _saved(ws: Workspace, name: str) -> tuple[Path, Segment]:
    """The segment file of ``name`` and its parsed definition (404 when there is none)."""
    path = _segment_file(ws, name)
    if not path.exists():
        raise NotFoundError(f"no segment file segments/{name}.yaml")
    return path, parse_segment(path.read_text(), file=f"segments/{name}.yaml")


def _with_name(name: str, body: dict[str, Any]) -> dict[str, Any]:
    given = body.get("name", name)
    if given != name:
        raise ApiProblem(
            422, "name-mismatch", f"the body names '{given}' but the path names '{name}'"
        )
    return {**body, "name": name}


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


@router.get("", summary="Segments with their current sizes", responses=RESPONSES)
def list_segments(_key: AnalystKey, services: ServicesDep) -> Response:
    ws = services.workspace
    sizes = seg_api.sizes(ws)
    # sizes() names the column "segment"; the API calls it "name"
    saved = {
        str(r["segment"]): {k: v for k, v in r.items() if k != "segment"}
        for r in sizes.to_dict(orient="records")
    }
    files = sorted(p.stem for p in project_segment_files(ws.project.root))
    items = [
        {"name": name, "file": f"segments/{name}.yaml", **saved.get(name, {"size": None})}
        for name in files
    ]
    items += [
        {"name": name, "file": None, **row} for name, row in saved.items() if name not in files
    ]
    return json_response({"items": items})


@router.get("/{name}", summary="One segment's definition", responses=RESPONSES)
def get_segment(name: str, _key: AnalystKey, services: ServicesDep) -> Response:
    _, seg = _saved(services.workspace, name)
    return json_response({"name": name, "definition": seg_api.to_dict(seg)})


@router.post(
    "/preview",
    summary="Size of a definition before saving it (nothing is stored)",
    responses=RESPONSES,
)
def preview_segment(
    body: DefinitionBody, _key: AnalystKey, services: ServicesDep, as_of: AsOf = None
) -> Response:
    seg = parse_segment(body, file="<request body>")
    result = seg_api.preview(services.workspace, seg, as_of)
    return json_response(result.to_dict())


@router.put(
    "/{name}",
    summary="Create or replace a segment (validated, previewed, written to segments/<name>.yaml)",
    responses=RESPONSES,
)
def put_segment(
    name: str, body: DefinitionBody, key: AnalystKey, services: ServicesDep
) -> Response:
    ws = services.workspace
    path = _segment_file(ws, name)
    seg = parse_segment(_with_name(name, body), file=f"segments/{name}.yaml")
    # Preview checks the names it reads (traits, events, other segments) against the store.
    result = seg_api.preview(ws, seg)
    created = not path.exists()
    _write_atomically(path, dump_segment(seg))
    ws.store.audit(key.key_id, "segment.save", name, {"created": created, "size": result.size})
    return json_response(
        {"name": name, "created": created, "file": f"segments/{name}.yaml", **result.to_dict()},
        status=201 if created else 200,
    )


@router.delete("/{name}", summary="Delete a segment file", responses=RESPONSES)
def delete_segment(name: str, key: AnalystKey, services: ServicesDep) -> Response:
    ws = services.workspace
    path, _ = _saved(ws, name)
    path.unlink()
    ws.store.audit(key.key_id, "segment.delete", name)
    return Response(status_code=204)


@router.post(
    "/{name}/compute",
    summary="Compute one segment (and the segments it references) now",
    responses=RESPONSES,
)
def compute_segment(
    name: str, key: AnalystKey, services: ServicesDep, as_of: AsOf = None
) -> Response:
    ws = services.workspace
    _, seg = _saved(ws, name)
    report = ws.compute_segments(as_of=as_of, segments=[seg])
    ws.store.audit(key.key_id, "segment.compute", name)
    return json_response({"as_of": report.as_of, "runs": [r.__dict__ for r in report.runs]})


@router.get("/{name}/members", summary="Current members, by profile id", responses=RESPONSES)
def members(
    name: str,
    _key: AnalystKey,
    services: ServicesDep,
    after: Annotated[str, Query(max_length=200, description="profile id cursor")] = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    rows = services.workspace.store.rows(
        "SELECT profile_id, entered_at FROM memberships WHERE segment = ? AND profile_id > ?"
        " ORDER BY profile_id LIMIT ?",
        [_checked_name(name), after, limit + 1],
    )
    items = [{"profile_id": p, "entered_at": t} for p, t in rows[:limit]]
    next_after = items[-1]["profile_id"] if len(rows) > limit else None
    return json_response({"items": items, "next_after": next_after})


@router.get(
    "/{name}/history", summary="Entered / exited changes, newest first", responses=RESPONSES
)
def segment_history(
    name: str,
    _key: AnalystKey,
    services: ServicesDep,
    profile: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    ws = services.workspace
    pid = ws.profile_id(profile) if profile else None
    frame = seg_api.history(ws, _checked_name(name), pid, limit)
    return json_response({"items": frame.to_dict(orient="records")})


@router.get(
    "/{name}/explain/{ref:path}",
    summary="Why a profile is or is not in the segment, condition by condition",
    responses=RESPONSES,
)
def explain(
    name: str, ref: str, _key: AnalystKey, services: ServicesDep, as_of: AsOf = None
) -> Response:
    result = seg_api.explain(services.workspace, _checked_name(name), ref, as_of)
    return json_response(result.to_dict())
