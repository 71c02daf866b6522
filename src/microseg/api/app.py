"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from microseg.api import cache_budget, memory, problems
from microseg.api.auth import Authenticator, RateLimiter
from microseg.api.collector import Collector
from microseg.api.deps import SECURITY_SCHEMES, Services
from microseg.api.privacy_hooks import install_privacy_hooks
from microseg.api.realtime import RealtimeBridge
from microseg.api.routers import (
    admin,
    dashboard,
    decide,
    events,
    health,
    privacy,
    profiles,
    quarantine,
    segments,
)
from microseg.api.schema import ensure_schema
from microseg.api.serving import ServingState
from microseg.api.settings import ApiSettings
from microseg.personalize.decisions import load_engine
from microseg.privacy.retention import retention_loop
from microseg.workspace import Workspace

API_PREFIX = "/v1"
DESCRIPTION = """Collect events, look up profiles and serve decisions.

Every endpoint except `GET /v1/health` needs an API key (`Authorization: Bearer <key>` or
`X-API-Key: <key>`) whose role allows it: **admin** (everything), **analyst** (profiles,
quarantine, decisions), **collector** (events), **decision-reader** (decisions).
Errors are `application/problem+json` (RFC 9457)."""


def create_app(
    workspace: Workspace,
    settings: ApiSettings | None = None,
    *,
    realtime: RealtimeBridge | None = None,
    close_workspace: bool = False,
    freeze_gc: bool = False,
) -> FastAPI:
    """Build the app for an open workspace. Refuses weak keys outside dev mode (ConfigError).

    Startup (lifespan) imports spool segments left by a crash, loads the serving state and
    starts the importer; with ``realtime`` every committed batch also goes through the
    real-time segment evaluator, swept every ``settings.sweep_seconds``. Shutdown imports what
    is spooled, stops the importer and, with ``close_workspace``, closes the store.
    ``freeze_gc`` (server processes) moves the loaded state out of the GC's scans."""
    settings = settings or ApiSettings()
    ensure_schema(workspace.store)
    auth = Authenticator.from_store(workspace.store, workspace.keys, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        collector = Collector(workspace, settings)
        state = await run_in_threadpool(
            ServingState.from_store,
            workspace.store,
            workspace.keys,
            traits_table=settings.traits_table,
            membership_table=settings.membership_table,
        )
        collector.state = state
        if realtime is not None:
            state.subscribe(realtime)
            collector.realtime = realtime
        # segments a crash left behind go through the state and the real-time evaluator too
        await run_in_threadpool(collector.recover)
        decisions, decisions_error = await run_in_threadpool(load_engine, workspace, state)
        if freeze_gc:  # the loaded state is long-lived: keep it out of GC scans (p99 latency)
            gc.collect()
            gc.freeze()
        sweeper: asyncio.Task[None] | None = None
        if realtime is not None:
            sweeper = asyncio.create_task(_sweep_forever(realtime, state, settings.sweep_seconds))
        unhook = install_privacy_hooks(workspace.store, state, realtime, decisions)
        retention: asyncio.Task[None] | None = None
        if workspace.settings.privacy.retention_days:
            retention = asyncio.create_task(retention_loop(workspace, settings.retention_seconds))
        collector.start()
        if decisions is not None:
            decisions.start()
        keeper = cache_budget.start_keeper(
            workspace.store,
            memory.size_bytes(settings.store_cache_budget),
            settings.store_cache_seconds,
        )
        app.state.services = Services(
            workspace,
            settings,
            auth,
            RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst),
            state,
            collector,
            decisions=decisions,
            decisions_error=decisions_error,
            cache_keeper=keeper,
        )
        try:
            yield
        finally:
            if sweeper is not None:
                sweeper.cancel()
            if retention is not None:
                retention.cancel()
            unhook()
            await run_in_threadpool(cache_budget.stop_keeper, keeper)
            await run_in_threadpool(collector.stop)
            if decisions is not None:
                await run_in_threadpool(decisions.stop)
            if freeze_gc:
                gc.unfreeze()
            if close_workspace:
                workspace.close()

    public_docs = settings.docs_public
    app = FastAPI(
        title="microseg",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if public_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if public_docs else None,
    )
    problems.install(app)
    secured: set[tuple[str, str]] = set()
    # Included straight under /v1 (no nested router: cheaper matching); the hot path first.
    modules = (decide, events, profiles, quarantine, segments, privacy, health, admin, dashboard)
    for module in modules:
        app.include_router(module.router, prefix=API_PREFIX)
        secured |= _secured_operations(module.router, API_PREFIX)
    app.include_router(dashboard.pages)  # HTML pages + local assets at /dashboard
    _document_security(app, secured)
    return app


async def _sweep_forever(bridge: RealtimeBridge, state: ServingState, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await run_in_threadpool(bridge.sweep, state)


def _secured_operations(router: APIRouter, prefix: str) -> set[tuple[str, str]]:
    """(method, path) of the router's operations whose dependencies check an API key."""
    return {
        (method.lower(), prefix + route.path_format)  # as OpenAPI writes it: no ":path"
        for route in router.routes
        if isinstance(route, APIRoute)
        and any(getattr(d.call, "__microseg_secured__", False) for d in _calls(route.dependant))
        for method in route.methods or ()
    }


def _document_security(app: FastAPI, secured: set[tuple[str, str]]) -> None:
    """Keys are read from the headers directly (cheaper than FastAPI's security classes);
    declare the schemes in the OpenAPI document for every operation that requires a key."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    if (method, path) in secured:
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _calls(dependant: Dependant) -> list[Dependant]:
    out = []
    for dep in dependant.dependencies:
        out.append(dep)
        out.extend(_calls(dep))
    return out
