"""Liveness: public on purpose (load balancers have no key); says nothing sensitive."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter
from starlette.responses import Response

from microseg.api.deps import ServicesDep
from microseg.api.routers._json import json_response
from microseg.api.schemas import Health

router = APIRouter(prefix="/health", tags=["health"])


def _version() -> str:
    try:
        return version("microseg")
    except PackageNotFoundError:
        return "unknown"


@router.get("", summary="Is the server up (no API key needed)", response_model=Health)
async def health(services: ServicesDep) -> Response:
    ok = services.collector.alive() and not services.collector.parked_segments
    return json_response(
        {"status": "ok" if ok else "degraded", "version": _version()}, 200 if ok else 503
    )
