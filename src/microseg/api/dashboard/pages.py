"""HTML rendering of dashboard pages: Jinja2 with autoescape and strict security headers.

Pages are shells: the data comes from ``/v1/dashboard/...`` through ``static/dashboard.js``;
page parameters travel in (escaped) ``data-*`` attributes, so no inline script is needed and
the Content-Security-Policy can forbid inline scripts and every other origin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from microseg.api.auth import Principal

TEMPLATES = Path(__file__).with_name("templates")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (
    ("overview", "/dashboard", "Overview"),
    ("segments", "/dashboard/segments", "Segments"),
    ("profile", "/dashboard/profiles", "Profiles"),
    ("experiments", "/dashboard/experiments", "Experiments"),
    ("kpis", "/dashboard/kpis", "KPIs"),
    ("attribution", "/dashboard/attribution", "Attribution"),
)

_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"], default=True),
    auto_reload=False,
)


def render(
    template: str, principal: Principal | None, status: int = 200, **ctx: Any
) -> HTMLResponse:
    """An HTML response of ``template`` with the navigation and the caller in its context."""
    html = _env.get_template(template).render(nav=NAV, principal=principal, **ctx)
    return HTMLResponse(html, status_code=status, headers=HEADERS)
