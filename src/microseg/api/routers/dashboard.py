"""The web dashboard: HTML pages under ``/dashboard`` and the JSON they fetch under
``/v1/dashboard``.

Two routers: ``router`` (JSON, included under ``/v1`` like every API router) and ``pages``
(HTML + local static assets, included at the root). Every route except the login form
requires an analyst or admin key, from the ``Authorization`` / ``X-API-Key`` header or the
encrypted session cookie set by the login form (see :mod:`microseg.api.dashboard.session`).
Pages without a session redirect to the login form; JSON answers 401 problem+json. Handlers
are plain functions, so FastAPI runs the DuckDB reads in its thread pool.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Query, Request
from starlette.responses import RedirectResponse, Response

from microseg.api.dashboard import analytics, data
from microseg.api.dashboard.assets import asset
from microseg.api.dashboard.pages import render
from microseg.api.dashboard.session import (
    COOKIE,
    SESSION_SECONDS,
    DashboardData,
    DashboardPage,
    check_role,
    safe_next,
    seal,
)
from microseg.api.deps import ServicesDep
from microseg.api.problems import ApiProblem
from microseg.api.routers._json import json_response
from microseg.api.schemas import PROBLEM_RESPONSES
from microseg.config.models import NAME_RE

router = APIRouter(prefix="/dashboard", tags=["dashboard"], responses=PROBLEM_RESPONSES)
pages = APIRouter(prefix="/dashboard", include_in_schema=False)

Freq = Annotated[str, Query(pattern="^[DWM]$", description="period: D, W or M")]
Ref = Annotated[str, Query(min_length=1, max_length=200)]
Text = Annotated[str | None, Query(max_length=100)]
When = Annotated[datetime | None, Query(description="UTC time")]


def _name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ApiProblem(422, "invalid-name", "names are lower_snake_case: letters, digits and _")
    return name


# --------------------------------------------------------------------------- JSON
@router.get("/overview", summary="Headline counts and segment sizes")
def overview(_key: DashboardData, services: ServicesDep) -> Response:
    return json_response(data.overview(services.workspace))


@router.get("/segments", summary="Segment sizes, size trends and the overlap matrix")
def segments(_key: DashboardData, services: ServicesDep, freq: Freq = "D") -> Response:
    return json_response(data.segments_page(services.workspace, freq))


@router.get("/segments/{name}", summary="One segment: definition, size trend, members sample")
def segment(name: str, _key: DashboardData, services: ServicesDep, freq: Freq = "D") -> Response:
    return json_response(data.segment_detail(services.workspace, _name(name), freq=freq))


@router.get("/profiles", summary="Find profiles by id, typed id key or id value prefix")
def find_profiles(q: Ref, _key: DashboardData, services: ServicesDep) -> Response:
    return json_response({"items": data.find_profiles(services.workspace, q)})


# before /profiles/{ref:path}, which would swallow ".../explain/<segment>" (ids may hold "/")
@router.get("/profiles/{ref:path}/explain/{segment}", summary="Why a profile is (not) in a segment")
def explain(ref: str, segment: str, _key: DashboardData, services: ServicesDep) -> Response:
    return json_response(data.explain(services.workspace, _name(segment), ref))


@router.get("/profiles/{ref:path}", summary="A profile: traits, identities, segments, events")
def profile(ref: str, _key: DashboardData, services: ServicesDep) -> Response:
    return json_response(data.profile_page(services.workspace, ref))


@router.get("/experiments", summary="Experiments with assignment and exposure counts")
def experiments(_key: DashboardData, services: ServicesDep) -> Response:
    return json_response({"items": analytics.experiments_list(services.workspace)})


@router.get("/experiments/{key}", summary="Arms, lifts with intervals and chance to win")
def experiment(
    key: str,
    _key: DashboardData,
    services: ServicesDep,
    event: Annotated[str, Query(min_length=1, max_length=100)] = analytics.DEFAULT_CONVERSION,
    revenue: Text = None,
    alpha: Annotated[float, Query(gt=0, lt=0.5)] = 0.05,
) -> Response:
    return json_response(
        analytics.experiment_detail(services.workspace, key, event, revenue, alpha)
    )


@router.get("/kpis", summary="Segment KPIs per period (measure.kpis)")
def kpis(
    _key: DashboardData,
    services: ServicesDep,
    segment: Annotated[list[str] | None, Query(max_length=50)] = None,
    freq: Freq = "W",
    start: When = None,
    end: When = None,
    metric: Text = None,
    periods: Annotated[int | None, Query(ge=1, le=1000, description="latest N periods")] = None,
) -> Response:
    names = [_name(s) if s != "(all)" else s for s in segment or []]
    return json_response(
        analytics.kpis(
            services.workspace,
            segments=names,
            start=start,
            end=end,
            freq=freq,
            metric=metric,
            periods=periods,
        )
    )


@router.get("/attribution", summary="Channel credit per attribution model")
def attribution(
    _key: DashboardData,
    services: ServicesDep,
    event: Annotated[str, Query(min_length=1, max_length=100)] = analytics.DEFAULT_CONVERSION,
    channel: Text = None,
    model: Annotated[list[str] | None, Query(max_length=10)] = None,
    start: When = None,
    end: When = None,
) -> Response:
    return json_response(
        analytics.attribution(
            services.workspace,
            event=event,
            channel=channel,
            models=model or analytics.MODELS,
            start=start,
            end=end,
        )
    )


# --------------------------------------------------------------------------- pages
@pages.get("/login")
def login_form(request: Request, next: str | None = None, error: str | None = None) -> Response:
    """The only route without a key: the form where a user pastes one."""
    return render("login.html", None, next=safe_next(next), error=error)


@pages.post("/login")
async def login(request: Request, services: ServicesDep) -> Response:
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiProblem(403, "cross-origin", "log in from the dashboard's own login form")
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=10)
    key = (form.get("key") or [""])[0].strip()
    target = safe_next((form.get("next") or [""])[0])
    try:
        check_role(services, key or None)
    except ApiProblem as exc:
        return render("login.html", None, status=exc.status, next=target, error=exc.detail)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        seal(services.workspace.keys, key),
        max_age=SESSION_SECONDS,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@pages.post("/logout")
def logout(_key: DashboardPage) -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


@pages.get("")
def overview_page(key: DashboardPage) -> Response:
    return render("overview.html", key)


@pages.get("/segments")
def segments_page(key: DashboardPage) -> Response:
    return render("segments.html", key)


@pages.get("/segments/{name}")
def segment_page(name: str, key: DashboardPage) -> Response:
    return render("segment.html", key, segment=_name(name))


@pages.get("/profiles")
def profile_page(key: DashboardPage, ref: str | None = None) -> Response:
    return render("profile.html", key, ref=(ref or "")[:200])


@pages.get("/experiments")
def experiments_page(key: DashboardPage) -> Response:
    return render("experiments.html", key, experiment="")


@pages.get("/experiments/{exp_key}")
def experiment_page(exp_key: str, key: DashboardPage) -> Response:
    return render("experiments.html", key, experiment=exp_key[:200])


@pages.get("/kpis")
def kpis_page(key: DashboardPage) -> Response:
    return render("kpis.html", key)


@pages.get("/attribution")
def attribution_page(key: DashboardPage) -> Response:
    return render("attribution.html", key)


@pages.get("/static/{name}")
def static(name: str, request: Request, _key: DashboardPage) -> Response:
    found = asset(name)
    headers = {"ETag": found.etag, "Cache-Control": "private, max-age=3600"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    body = found.body
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = found.gzipped
        headers["Content-Encoding"] = "gzip"
    headers["Vary"] = "Accept-Encoding"
    return Response(body, media_type=found.media_type, headers=headers)
