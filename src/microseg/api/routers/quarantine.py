"""Quarantined records and their reasons (analyst)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response

from microseg.api.deps import AnalystKey, ServicesDep
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES, QuarantinePage

router = APIRouter(prefix="/quarantine", tags=["quarantine"])
COLUMNS = ("q_id", "source", "row_number", "reason", "detail", "record", "quarantined_at", "status")


@router.get(
    "",
    summary="Quarantined records, oldest first",
    response_model=QuarantinePage,
    responses=PROBLEM_RESPONSES,
)
def quarantine(
    _key: AnalystKey,
    services: ServicesDep,
    status: Annotated[str | None, Query(pattern="^(open|replayed|all)$")] = "open",
    reason: Annotated[str | None, Query(max_length=100)] = None,
    source: Annotated[str | None, Query(max_length=300, description="e.g. http:seg-...")] = None,
    after: Annotated[int, Query(ge=0, description="q_id cursor from next_after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    wanted = None if status == "all" else status
    rows = services.workspace.store.rows(
        "SELECT q_id, source, row_number, reason, detail, record, quarantined_at, status"
        " FROM quarantine WHERE q_id > ? AND (? IS NULL OR status = ?) AND (? IS NULL OR reason = ?)"
        " AND (? IS NULL OR source = ?) ORDER BY q_id LIMIT ?",
        [after, wanted, wanted, reason, reason, source, source, limit + 1],
    )
    items: list[dict[str, Any]] = []
    for row in rows[:limit]:
        item = dict(zip(COLUMNS, row, strict=True))
        record = orjson.loads(item["record"]) if item["record"] else None
        item["record"] = {k: v for k, v in record.items() if v is not None} if record else None
        # stored naive UTC; the schema promises an RFC 3339 date-time, which carries an offset
        item["quarantined_at"] = item["quarantined_at"].replace(tzinfo=UTC)
        items.append(item)
    next_after = items[-1]["q_id"] if len(rows) > limit else None
    return json_response({"items": items, "next_after": next_after})
