"""The dashboard in a real headless Chromium (Debian ``chromium`` + Playwright, no download).

A uvicorn server on a free port serves the synthetic project; the browser logs in with an
analyst key, visits every page, clicks through to a segment, a profile's "why" and an
experiment, and checks there is no console error, no failed request and that every chart
was drawn (Plotly finished AND a screenshot of the chart region is not blank)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_support import EXPERIMENT, Project, dash_project, dashboard_app

__all__ = ["dash_project"]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.browser


def _need_browser() -> Any:
    """The Playwright module, else skip (locally) or fail (CI=true) with the reason."""
    reason = None
    sync_api: Any = None
    try:
        from playwright import sync_api
    except ImportError:
        reason = "the playwright package is not installed (pip install playwright)"
    if reason is None and not CHROMIUM.exists():
        reason = f"{CHROMIUM} is absent (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    return sync_api


@pytest.fixture(scope="module")
def server(dash_project: Project) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = dashboard_app(dash_project.workspace)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)


def not_blank(png: bytes, min_colours: int = 6, min_ink: float = 0.01) -> tuple[bool, str]:
    """A drawn chart has several distinct colours and some non-white pixels."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours: list[tuple[int, Any]] = list(img.getcolors(maxcolors=1 << 20) or [])
    total = img.width * img.height
    ink = sum(n for n, rgb in colours if sum(rgb) < 3 * 235) / total
    return len(colours) >= min_colours and ink >= min_ink, f"{len(colours)} colours, ink {ink:.3f}"


class Watch:
    """Console errors, page errors and failed / >= 400 requests of one page."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url} {r.failure}"))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    def _response(self, response: Any) -> None:
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")


def check_page(page: Any, watch: Watch, shots: Path, name: str) -> int:
    """Wait for the page script, then check every chart; returns the number of charts."""
    page.wait_for_selector("body[data-ready]", timeout=30_000)
    assert page.get_attribute("body", "data-ready") == "1", page.inner_text("#error")
    assert page.is_hidden("#error"), page.inner_text("#error")
    charts = page.query_selector_all(".chart")
    for chart in charts:
        cid = chart.get_attribute("id")
        assert chart.get_attribute("data-rendered") == "1", (name, cid)
        assert chart.query_selector("svg.main-svg") is not None, (name, cid)
        png = chart.screenshot(path=str(shots / f"{name}-{cid}.png"))
        ok, info = not_blank(png)
        assert ok, (name, cid, info)
    assert not watch.problems, watch.problems
    return len(charts)


def test_dashboard_in_chromium(server: str, dash_project: Project, tmp_path: Path) -> None:
    sync_api = _need_browser()
    started = time.monotonic()
    shots = tmp_path / "shots"
    shots.mkdir()
    ws = dash_project.workspace
    buyer = ws.store.scalar(
        "SELECT i.id_key FROM memberships m JOIN identities i ON i.profile_id = m.profile_id"
        " WHERE m.segment = 'buyers' ORDER BY i.id_key LIMIT 1"
    )
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        watch = Watch(page)

        # no session: the dashboard sends the browser to the login form
        page.goto(server + "/dashboard/segments")
        assert "/dashboard/login?next=" in page.url
        page.fill("#key", "msk_wrong_key")
        page.click("button[type=submit]")
        assert "invalid or revoked" in page.inner_text(".error")
        assert all("401" in w for w in watch.problems), watch.problems  # the refused login
        watch.problems.clear()
        page.fill("#key", dash_project.keys["analyst"])
        page.click("button[type=submit]")
        page.wait_for_url(server + "/dashboard/segments")
        cookie = next(c for c in context.cookies() if c["name"] == "microseg_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.evaluate("document.cookie") == ""  # invisible to scripts

        charts = check_page(page, watch, shots, "segments")
        for path, name in (
            ("/dashboard", "overview"),
            ("/dashboard/kpis", "kpis"),
            ("/dashboard/attribution", "attribution"),
        ):
            page.goto(server + path)
            charts += check_page(page, watch, shots, name)
        assert page.locator("#attribution-table tbody tr").count() >= 6 * 4

        # overview -> click a segment -> its detail page
        page.goto(server + "/dashboard")
        check_page(page, watch, shots, "overview2")
        page.click("#segments-table a:text-is('buyers')")
        page.wait_for_url(server + "/dashboard/segments/buyers")
        charts += check_page(page, watch, shots, "segment")
        assert '"purchase"' in page.inner_text("#definition")
        assert page.locator("#members-table tbody tr").count() >= 10

        # search a profile -> why explanations
        page.goto(server + "/dashboard/profiles")
        check_page(page, watch, shots, "profile-empty")
        page.fill("#ref", str(buyer))
        page.click("#profile-search button")
        check_page(page, watch, shots, "profile")
        member = page.locator(".why.member", has_text="buyers")
        member.wait_for()
        assert member.locator("li.pass").count() >= 1 and "member" in member.inner_text()
        why_not = page.locator("#not-member button").first
        if why_not.count():
            why_not.click()
            page.locator(".why.nonmember li.fail").first.wait_for()
        assert page.locator("#events-table tbody tr").count() >= 1
        page.screenshot(path=str(shots / "profile-page.png"), full_page=True)

        # experiments list -> click the experiment -> lift intervals and chance to win
        page.goto(server + "/dashboard/experiments")
        check_page(page, watch, shots, "experiments")
        page.click(f"#experiments-table a:text-is('{EXPERIMENT}')")
        page.wait_for_url(server + f"/dashboard/experiments/{EXPERIMENT}")
        charts += check_page(page, watch, shots, "experiment")
        assert page.locator("#arms-table tbody tr").count() == 2
        assert "sample ratio ok" in page.inner_text("#experiment-notes")

        page.click("header form.who button")
        page.wait_for_url(server + "/dashboard/login")
        page.goto(server + "/dashboard")
        assert "/dashboard/login" in page.url  # logged out
        browser.close()
    assert charts >= 8
    keep = os.environ.get("MICROSEG_KEEP_SCREENSHOTS")
    if keep:
        shutil.copytree(shots, keep, dirs_exist_ok=True)
    assert time.monotonic() - started < 60


def test_a_missing_browser_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    import test_dashboard_browser as me

    monkeypatch.setattr(me, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        _need_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="must run in CI"):
        _need_browser()
