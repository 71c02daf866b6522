"""Administration: API keys, collector / serving statistics, serving-state reload."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from microseg.api import keys as api_keys
from microseg.api import memory
from microseg.api.deps import AdminKey, ServicesDep
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES, ApiKeyCreate, ApiKeyCreated, ApiKeyPublic

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/stats",
    summary="Collector, serving state, real-time evaluator, store counts and memory hygiene",
    responses=PROBLEM_RESPONSES,
)
def stats(_key: AdminKey, services: ServicesDep) -> Response:
    body: dict[str, Any] = {
        "collector": services.collector.stats(),
        "serving": services.state.stats(),
        # the live segment evaluator (None: off, or no segment files / traits yet)
        "realtime": realtime.stats() if (realtime := services.collector.realtime) else None,
        "store": services.workspace.counts(),
        "decisions": services.decisions.stats() if services.decisions else None,
        "decisions_error": services.decisions_error,
        "started_at": services.started_at,
        # memory hygiene: the process's glibc trimmer and this app's DuckDB cache keeper
        "memory": {
            "malloc_trim": memory.trim_stats(),
            "cache_keeper": keeper.as_dict() if (keeper := services.cache_keeper) else None,
        },
    }
    return json_response(body)


@router.get(
    "/apikeys",
    summary="List API keys (never the secrets)",
    response_model=list[ApiKeyPublic],
    responses=PROBLEM_RESPONSES,
)
def list_keys(_key: AdminKey, services: ServicesDep) -> Response:
    df = api_keys.list_keys(services.workspace.store)
    rows = [
        {k: _aware(None if v != v else v) for k, v in r.items()}
        for r in df.to_dict(orient="records")
    ]
    return json_response(rows)


def _aware(value: Any) -> Any:
    """Stored times are naive UTC; the API's date-times are RFC 3339 with their offset
    (``2026-01-02T03:04:05+00:00``; pandas Timestamps would print with a space)."""
    if isinstance(value, datetime):
        plain = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
        return (plain if plain.tzinfo else plain.replace(tzinfo=UTC)).isoformat()
    return value


@router.post(
    "/apikeys",
    status_code=201,
    summary="Create an API key (shown once)",
    response_model=ApiKeyCreated,
    responses=PROBLEM_RESPONSES,
)
def create_key(body: ApiKeyCreate, principal: AdminKey, services: ServicesDep) -> Response:
    ws = services.workspace
    record, key = api_keys.create_key(
        ws.store,
        ws.keys,
        body.role,
        name=body.name,
        rate_per_second=body.rate_per_second,
        actor=f"api:{principal.key_id}",
    )
    services.auth.add(record)
    return json_response(
        {"key_id": record.key_id, "role": record.role, "name": record.name, "key": key}, 201
    )


@router.delete(
    "/apikeys/{key_id}",
    status_code=204,
    summary="Revoke an API key",
    responses={
        **PROBLEM_RESPONSES,
        404: {"description": "no active key", "content": {"application/problem+json": {}}},
    },
)
def revoke_key(key_id: str, principal: AdminKey, services: ServicesDep) -> Response:
    api_keys.revoke_key(services.workspace.store, key_id, actor=f"api:{principal.key_id}")
    services.auth.remove(key_id)
    return Response(status_code=204)


@router.post(
    "/serving/reload",
    summary="Reload the serving state from the store",
    responses=PROBLEM_RESPONSES,
)
async def reload(_key: AdminKey, services: ServicesDep) -> Response:
    s = services.settings
    await run_in_threadpool(
        services.state.reload,
        services.workspace.store,
        traits_table=s.traits_table,
        membership_table=s.membership_table,
    )
    return json_response(services.state.stats())
