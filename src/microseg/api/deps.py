"""Request dependencies: the app's services and role checks, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from microseg.api.auth import Authenticator, Principal, RateLimiter
from microseg.api.cache_budget import CacheKeeper
from microseg.api.collector import Collector
from microseg.api.problems import ApiProblem
from microseg.api.serving import ServingState
from microseg.api.settings import ApiSettings
from microseg.personalize.decisions import DecisionEngine
from microseg.store import utcnow
from microseg.workspace import Workspace


@dataclass
class Services:
    """Everything a request handler may use; built by the app's lifespan."""

    workspace: Workspace
    settings: ApiSettings
    auth: Authenticator
    limiter: RateLimiter
    state: ServingState
    collector: Collector
    started_at: datetime = field(default_factory=utcnow)
    decisions: DecisionEngine | None = None  # None: no decisions/*.yaml (or they failed)
    decisions_error: str | None = None  # why the decision rules did not load
    cache_keeper: CacheKeeper | None = None  # None: no cache budget (or an in-memory store)


async def get_services(request: Request) -> Services:
    # async on purpose: a plain `def` dependency would cost a thread hop per request
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <API key>",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "X-API-Key: <API key>",
    },
}


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``."""
    headers = request.headers
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller, checks the role and the rate limit.

    ``admin`` may do everything."""
    allowed = frozenset(roles) | {"admin"}

    async def dependency(request: Request) -> Principal:
        services: Services = request.app.state.services
        principal = services.auth.authenticate(presented_key(request))
        if principal.role not in allowed:
            raise ApiProblem(
                403,
                "forbidden",
                f"role '{principal.role}' may not do this; needs one of: {', '.join(sorted(allowed))}",
            )
        services.limiter.check(principal)
        return principal

    dependency.__name__ = "require_" + "_".join(r.replace("-", "_") for r in roles)
    dependency.__microseg_secured__ = True  # type: ignore[attr-defined]
    return dependency


AdminKey = Annotated[Principal, Depends(require("admin"))]
AnalystKey = Annotated[Principal, Depends(require("analyst"))]
CollectorKey = Annotated[Principal, Depends(require("collector"))]
DecisionKey = Annotated[Principal, Depends(require("decision-reader", "analyst"))]
