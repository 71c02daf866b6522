"""Request dependencies: the app's services and role checks, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from microseg.api.auth import Authenticator, Principal, RateLimiter
from microseg.api.collector import Collector
from microseg.api.problems import ApiProblem
from microseg.api.serving import ServingState
from microseg.api.settings import ApiSettings
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


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <API key>")


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates the caller, checks the role and the rate limit.

    ``admin`` may do everything."""
    allowed = frozenset(roles) | {"admin"}

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
        api_key: Annotated[str | None, Security(_header)],
    ) -> Principal:
        services: Services = request.app.state.services
        presented = api_key or (bearer.credentials if bearer else None)
        principal = services.auth.authenticate(presented)
        if principal.role not in allowed:
            raise ApiProblem(
                403, "forbidden",
                f"role '{principal.role}' may not do this; needs one of: {', '.join(sorted(allowed))}",
            )
        services.limiter.check(principal)
        return principal

    dependency.__name__ = "require_" + "_".join(r.replace("-", "_") for r in roles)
    return dependency


AdminKey = Annotated[Principal, Depends(require("admin"))]
AnalystKey = Annotated[Principal, Depends(require("analyst"))]
CollectorKey = Annotated[Principal, Depends(require("collector"))]
DecisionKey = Annotated[Principal, Depends(require("decision-reader", "analyst"))]
