"""Event collector: POST /v1/events and /v1/events/batch."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from microseg.api.deps import CollectorKey, Services, ServicesDep
from microseg.api.problems import ApiProblem
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES, CollectResult, EventIn
from microseg.api.spool import SpoolSyncError

router = APIRouter(prefix="/events", tags=["events"])

WAIT_DOC = (
    "true (default): answer after the store commit with exact accepted / duplicates / "
    "quarantined counts and per-event reasons (200). false: answer as soon as the events are "
    "fsync'd to the spool (202); reasons then appear in GET /v1/quarantine."
)
WaitParam = Annotated[bool, Query(description=WAIT_DOC)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    202: {"model": CollectResult, "description": "durably spooled; counts pending"},
    400: {"description": "body is not JSON", "content": {"application/problem+json": {}}},
    413: {"description": "body or batch too large", "content": {"application/problem+json": {}}},
    503: {
        "description": "the spool could not make the events durable (retry: deduplicated by id)",
        "content": {"application/problem+json": {}},
    },
    415: {"description": "not a JSON content type", "content": {"application/problem+json": {}}},
}


def _body_doc(batch: bool) -> dict[str, Any]:
    schema = EventIn.model_json_schema()
    if batch:
        schema = {
            "title": "EventBatchIn",
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": schema}},
        }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing non-JSON content types and bodies over ``limit`` bytes."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype and not (ctype == "application/json" or ctype.endswith("+json")):
        raise ApiProblem(415, "unsupported-media-type", f"send application/json, not '{ctype}'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiProblem(413, "too-large", f"body of {declared} bytes exceeds {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiProblem(413, "too-large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse(body: bytes) -> Any:
    if not body.strip():
        raise ApiProblem(400, "malformed-json", "empty body; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiProblem(400, "malformed-json", f"body is not valid JSON: {exc}") from None


async def collect(services: Services, items: list[Any], wait: bool) -> Response:
    collector = services.collector
    lines, ids, indexes, rejected = collector.encode(items)
    # placed + evaluated here when the evaluation lock is free, else evaluated in a worker
    # thread (it may wait for the importer's commit); the fsync is awaited without a thread
    try:
        placement = collector.place(lines, ids, indexes, wait, items, blocking=False)
        if placement.rest is not None:
            await run_in_threadpool(placement.rest)
        ticket = placement.ticket
        if ticket is not None:
            await asyncio.wrap_future(ticket.durable)
    except SpoolSyncError as exc:  # not durable, so not acknowledged: the client retries
        raise ApiProblem(503, "spool-unavailable", str(exc)) from None
    outcome: dict[str, Any] | None = None
    if ticket is None and wait:
        outcome = {
            "status": "committed",
            "accepted": 0,
            "duplicates": 0,
            "quarantined": 0,
            "errors": [],
        }
    elif ticket is not None and ticket.waiter is not None:
        waiting = asyncio.wrap_future(ticket.waiter.future)
        done, _ = await asyncio.wait({waiting}, timeout=services.settings.commit_wait_seconds)
        outcome = waiting.result() if done else None
    body: dict[str, Any] = {"received": len(items), "rejected": len(rejected)}
    if outcome is not None and outcome["status"] == "committed":
        errors = sorted([*rejected, *outcome["errors"]], key=lambda e: e["index"])
        body.update(
            status="committed",
            accepted=outcome["accepted"],
            duplicates=outcome["duplicates"],
            quarantined=outcome["quarantined"],
            errors=errors,
        )
        return json_response(body, 200)
    body.update(status="spooled", accepted=None, duplicates=None, quarantined=None, errors=rejected)
    return json_response(body, 202)


@router.post(
    "",
    summary="Collect one event",
    response_model=CollectResult,
    responses=RESPONSES,
    openapi_extra=_body_doc(batch=False),
)
async def collect_one(
    request: Request, _key: CollectorKey, services: ServicesDep, wait: WaitParam = True
) -> Response:
    doc = parse(await read_body(request, services.settings.max_event_bytes))
    if not isinstance(doc, dict):
        raise ApiProblem(
            422, "not-an-object", f"an event must be a JSON object, got {type(doc).__name__}"
        )
    return await collect(services, [doc], wait)


@router.post(
    "/batch",
    summary="Collect a batch of events",
    response_model=CollectResult,
    responses=RESPONSES,
    openapi_extra=_body_doc(batch=True),
)
async def collect_batch(
    request: Request, _key: CollectorKey, services: ServicesDep, wait: WaitParam = True
) -> Response:
    """Body: ``{"events": [...]}`` (a bare JSON array is accepted too). Items that are not
    objects are quarantined as ``malformed_json`` like bad lines of a file."""
    settings = services.settings
    doc = parse(await read_body(request, settings.max_body_bytes))
    items = doc.get("events") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise ApiProblem(422, "not-a-batch", 'send {"events": [ {...}, ... ]}')
    if len(items) > settings.max_batch_events:
        raise ApiProblem(
            413,
            "batch-too-large",
            f"{len(items)} events in one batch; the limit is {settings.max_batch_events}",
        )
    return await collect(services, items, wait)
