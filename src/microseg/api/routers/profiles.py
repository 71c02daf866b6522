"""Profile view (store read): identities, attributes, traits, plus served segments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from microseg.api.deps import AnalystKey, ServicesDep
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES
from microseg.errors import NotFoundError

router = APIRouter(prefix="/profiles", tags=["profiles"])


@router.get(
    "/{ref:path}",
    summary="Everything the engine shows about a profile",
    responses={
        **PROBLEM_RESPONSES,
        404: {"description": "unknown profile", "content": {"application/problem+json": {}}},
    },
)
def profile(ref: str, _key: AnalystKey, services: ServicesDep) -> Response:
    view: dict[str, Any] = services.workspace.profile_view(ref)
    try:
        view["segments"] = sorted(services.state.get(view["profile_id"]).segments)
    except NotFoundError:
        view["segments"] = []
    return json_response(view)
