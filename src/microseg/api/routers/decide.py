"""Decision endpoint: a profile's segments and traits from the in-memory serving state."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from microseg.api.deps import DecisionKey, Services
from microseg.api.schemas import PROBLEM_RESPONSES, DecisionOut

router = APIRouter(prefix="/decide", tags=["decide"])


@router.get(
    "/{ref}",
    summary="Segments and traits of a profile (in memory, no store scan)",
    response_model=DecisionOut,
    responses={
        **PROBLEM_RESPONSES,
        404: {"description": "unknown profile", "content": {"application/problem+json": {}}},
    },
)
async def decide(ref: str, request: Request, _key: DecisionKey) -> Response:
    """``ref``: a profile id, an id key (``user_id:42``, ``email:ann@example.com``) or a bare
    user / device / anonymous id."""
    services: Services = request.app.state.services  # hot path: one dependency fewer
    return Response(services.state.get(ref).body(), media_type="application/json")
