"""Decision endpoint: a profile's segments and traits, plus rendered content decisions.

Without query parameters the answer is the profile's cached JSON body (the hot path, no
work per request). With ``?placement=`` (repeatable), ``channel`` and ``device`` the
decision engine evaluates each placement's rules from memory and renders the chosen blocks.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from microseg.api.deps import DecisionKey, Services
from microseg.api.problems import ApiProblem
from microseg.api.schemas import PROBLEM_RESPONSES, DecisionContentOut
from microseg.personalize.content import CHANNELS, DEVICES
from microseg.personalize.decisions import MAX_PLACEMENTS, DecisionRequest

router = APIRouter(prefix="/decide", tags=["decide"])
QUERY_PARAMS = frozenset({"placement", "channel", "device"})
PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "placement",
        "in": "query",
        "required": False,
        "description": f"placement to decide (repeatable, up to {MAX_PLACEMENTS})",
        "schema": {"type": "array", "items": {"type": "string"}},
        "style": "form",
        "explode": True,
    },
    {
        "name": "channel",
        "in": "query",
        "required": False,
        "description": "channel to render for (default web)",
        "schema": {"type": "string", "enum": list(CHANNELS), "default": "web"},
    },
    {
        "name": "device",
        "in": "query",
        "required": False,
        "description": "device to render for (default any)",
        "schema": {"type": "string", "enum": list(DEVICES), "default": "any"},
    },
]


@router.get(
    "/{ref:path}",
    summary="Segments and traits of a profile; with ?placement= also rendered content decisions",
    response_model=DecisionContentOut,
    responses={
        **PROBLEM_RESPONSES,
        400: {"description": "bad query parameters", "content": {"application/problem+json": {}}},
        404: {
            "description": "unknown profile or placement",
            "content": {"application/problem+json": {}},
        },
        503: {
            "description": "the project's decision rules failed to load",
            "content": {"application/problem+json": {}},
        },
    },
    openapi_extra={"parameters": PARAMETERS},
)
async def decide(ref: str, request: Request, _key: DecisionKey) -> Response:
    """``ref``: a profile id, an id key (``user_id:42``, ``email:ann@example.com``) or a bare
    user / device / anonymous id."""
    services: Services = request.app.state.services  # hot path: one dependency fewer
    if not request.scope["query_string"] or QUERY_PARAMS.isdisjoint(request.query_params):
        # no decision parameters (other query strings are ignored, as they always were)
        return Response(services.state.get(ref).body(), media_type="application/json")
    return await _decide_content(ref, request, services)


def _request_of(request: Request) -> DecisionRequest:
    params = request.query_params
    unknown = sorted(set(params) - QUERY_PARAMS)
    if unknown:
        raise ApiProblem(400, "bad-request", f"unknown query parameter(s): {', '.join(unknown)}")
    for single in ("channel", "device"):
        if len(params.getlist(single)) > 1:
            raise ApiProblem(400, "bad-request", f"'{single}' may be given once")
    placements = params.getlist("placement")
    if not placements:
        raise ApiProblem(400, "bad-request", "channel/device need at least one ?placement=")
    if len(placements) > MAX_PLACEMENTS or len(set(placements)) != len(placements):
        raise ApiProblem(400, "bad-request", f"ask for 1 to {MAX_PLACEMENTS} distinct placements")
    channel, device = params.get("channel", "web"), params.get("device", "any")
    if channel not in CHANNELS:
        raise ApiProblem(422, "validation-error", f"channel must be one of {', '.join(CHANNELS)}")
    if device not in DEVICES:
        raise ApiProblem(422, "validation-error", f"device must be one of {', '.join(DEVICES)}")
    return DecisionRequest(placements, channel, device)


async def _decide_content(ref: str, request: Request, services: Services) -> Response:
    wanted = _request_of(request)
    engine = services.decisions
    if engine is None:
        if services.decisions_error:
            raise ApiProblem(
                503,
                "decisions-unavailable",
                f"decision rules failed to load: {services.decisions_error}",
            )
        raise ApiProblem(404, "not-found", "this project defines no placements (decisions/*.yaml)")
    profile = services.state.get(ref)
    engine.check_request(wanted)  # unknown placement -> 404 before any work
    if engine.needs_context(profile.profile_id):  # a profile new since the last refresh
        await run_in_threadpool(engine.load_context, profile.profile_id)
    body = profile.as_dict()
    body["decisions"] = engine.decide(profile, wanted)
    return Response(orjson.dumps(body, default=str), media_type="application/json")
