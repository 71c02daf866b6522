"""Dashboard sessions: an encrypted, expiring HttpOnly cookie holding the caller's API key.

The login form posts an API key; when it authenticates with role analyst or admin the server
sets ``microseg_session`` = AES-256-GCM(``{"k": key, "exp": unix time}``) under the
workspace key ring (bound to a fixed context), HttpOnly, SameSite=Strict, Secure on https.
Every dashboard request is then authenticated exactly like an API call — header first, else
the cookie's key — through the app's :class:`~microseg.api.auth.Authenticator`, so a key
revoked through the admin API stops working for open sessions at once.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import quote

import orjson
from cryptography.exceptions import InvalidTag
from fastapi import Depends, Request

from microseg.api.auth import Principal
from microseg.api.deps import Services, presented_key
from microseg.api.problems import ApiProblem
from microseg.privacy.crypto import KeyRing

COOKIE = "microseg_session"
CONTEXT = "microseg-dashboard-session"
SESSION_SECONDS = 8 * 3600
ROLES = frozenset({"analyst", "admin"})
LOGIN_PATH = "/dashboard/login"


def seal(ring: KeyRing, key: str, now: float | None = None, ttl: int = SESSION_SECONDS) -> str:
    """The cookie value for ``key``: encrypted with its expiry time, URL-safe base64."""
    exp = int((time.time() if now is None else now) + ttl)
    blob = ring.encrypt(orjson.dumps({"k": key, "exp": exp}).decode(), CONTEXT)
    return base64.urlsafe_b64encode(blob).decode().rstrip("=")


def unseal(ring: KeyRing, value: str | None, now: float | None = None) -> str | None:
    """The API key inside a cookie value, or None when it is missing, forged or expired."""
    if not value or len(value) > 4096:
        return None
    try:
        blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        data = orjson.loads(ring.decrypt(blob, CONTEXT))
    except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("k"), str):
        return None
    expires = data.get("exp")
    if not isinstance(expires, int) or expires < (time.time() if now is None else now):
        return None
    return str(data["k"])


def check_role(services: Services, key: str | None) -> Principal:
    """Authenticate ``key`` (401), require analyst/admin (403) and apply the rate limit (429)."""
    principal = services.auth.authenticate(key)
    if principal.role not in ROLES:
        raise ApiProblem(
            403,
            "forbidden",
            f"role '{principal.role}' may not use the dashboard; needs one of: analyst, admin",
        )
    services.limiter.check(principal)
    return principal


def _request_key(request: Request, services: Services) -> str | None:
    return presented_key(request) or unseal(services.workspace.keys, request.cookies.get(COOKIE))


def _dashboard_key(page: bool) -> Callable[..., Awaitable[Principal]]:
    async def dependency(request: Request) -> Principal:
        services: Services = request.app.state.services
        key = _request_key(request, services)
        if not page:
            return check_role(services, key)
        try:
            if key is None:
                raise ApiProblem(401, "unauthorized", "no session")
            return check_role(services, key)
        except ApiProblem as exc:
            if exc.status != 401:
                raise
            # A browser without a (valid) session goes to the login form (303 + Location).
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise ApiProblem(
                303,
                "login-required",
                "log in to the dashboard with an API key",
                headers={"Location": f"{LOGIN_PATH}?next={quote(target, safe='')}"},
            ) from None

    dependency.__name__ = "require_dashboard_page" if page else "require_dashboard_data"
    dependency.__microseg_secured__ = True  # type: ignore[attr-defined]
    return dependency


DashboardPage = Annotated[Principal, Depends(_dashboard_key(page=True))]
DashboardData = Annotated[Principal, Depends(_dashboard_key(page=False))]


def safe_next(target: str | None) -> str:
    """Only local dashboard paths are followed after login (no open redirect)."""
    if target and target.startswith("/dashboard") and "//" not in target and "\\" not in target:
        return target
    return "/dashboard"
