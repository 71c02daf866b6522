"""Dashboard routes over HTTP: every route needs an analyst/admin key (header or session
cookie), JSON shapes, and numbers equal to the library functions and planted truth."""

from __future__ import annotations

import gzip
import sys
import time

import pandas as pd
import pytest
from dashboard_support import (
    EXPERIMENT,
    SEGMENTS,
    Project,
    dash_client,
    dash_project,
    route_paths,
)
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from microseg import segments as seg_api
from microseg.api.dashboard import session
from microseg.experiments.analysis import analyze_experiment
from microseg.experiments.store import arm_stats_from_events
from microseg.measure.attribution import MODELS, attribute

__all__ = ["dash_client", "dash_project"]  # module fixtures used below

PUBLIC = {("GET", "/dashboard/login"), ("POST", "/dashboard/login")}
SAMPLE_PARAMS = {"name": "buyers", "ref": "user_id:u01", "segment": "buyers", "key": EXPERIMENT}


def bearer(project: Project, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {project.keys[role]}"}


def dashboard_routes(client: TestClient) -> list[tuple[str, str]]:
    found = route_paths(client.app)  # type: ignore[arg-type]
    out = []
    for path, methods in found.items():
        if path.startswith(("/dashboard", "/v1/dashboard")):
            for method, route in methods:
                assert isinstance(route, APIRoute)
                secured = [
                    d
                    for d in route.dependant.dependencies
                    if getattr(d.call, "__microseg_secured__", False)
                ]
                assert secured or (method, path) in PUBLIC, (method, path)
                out.append((method, path))
    return out


def fill(path: str) -> str:
    for name, value in SAMPLE_PARAMS.items():
        path = path.replace("{" + name + "}", value)
    return path.replace("{exp_key}", EXPERIMENT)


def test_every_dashboard_route_rejects_requests_without_an_allowed_key(
    dash_client: TestClient, dash_project: Project
) -> None:
    dash_client.cookies.clear()
    routes = dashboard_routes(dash_client)
    assert len(routes) >= 20, routes
    assert ("GET", "/v1/dashboard/overview") in routes and ("GET", "/dashboard") in routes
    checked = 0
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url = fill(path).replace("/static/{name}", "/static/dashboard.css")
        anonymous = dash_client.request(method, url, follow_redirects=False)
        collector = dash_client.request(
            method, url, headers=bearer(dash_project, "collector"), follow_redirects=False
        )
        forged = dash_client.request(
            method, url, headers={"Cookie": f"{session.COOKIE}=forged"}, follow_redirects=False
        )
        if path.startswith("/v1/"):
            assert anonymous.status_code == 401, (method, url, anonymous.text)
            assert anonymous.headers["content-type"].startswith("application/problem+json")
        else:  # pages send the browser to the login form
            assert anonymous.status_code == 303, (method, url, anonymous.status_code)
            assert anonymous.headers["location"].startswith("/dashboard/login?next=")
        assert forged.status_code == anonymous.status_code, (method, url)
        assert collector.status_code == 403, (method, url, collector.status_code)
        checked += 1
    assert checked == len(routes) - len(PUBLIC)


def test_login_sets_an_encrypted_httponly_strict_cookie(
    dash_client: TestClient, dash_project: Project
) -> None:
    dash_client.cookies.clear()
    form = dash_client.get("/dashboard/login?next=/dashboard/segments")
    assert form.status_code == 200 and 'name="key"' in form.text
    assert form.headers["content-security-policy"].startswith("default-src 'self'")
    key = dash_project.keys["analyst"]
    r = dash_client.post(
        "/dashboard/login",
        data={"key": key, "next": "/dashboard/segments"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/segments"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(session.COOKIE + "=")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "max-age=28800" in lowered
    secret = key.split("_", 2)[2]  # msk_<id>_<secret>; the secret itself may contain "_"
    assert key not in cookie and secret not in cookie  # the key is encrypted
    page = dash_client.get("/dashboard/segments")
    assert page.status_code == 200 and 'data-page="segments"' in page.text
    assert "test analyst (analyst)" in page.text
    assert dash_client.get("/v1/dashboard/overview").status_code == 200
    out = dash_client.post("/dashboard/logout", follow_redirects=False)
    assert out.status_code == 303 and session.COOKIE in out.headers["set-cookie"]
    dash_client.cookies.clear()
    assert dash_client.get("/v1/dashboard/overview").status_code == 401


@pytest.mark.parametrize(
    ("role", "status", "message"),
    [("collector", 403, "may not use the dashboard"), (None, 401, "invalid or revoked")],
)
def test_login_refuses_wrong_keys_without_a_cookie(
    dash_client: TestClient, dash_project: Project, role: str | None, status: int, message: str
) -> None:
    dash_client.cookies.clear()
    key = dash_project.keys[role] if role else "msk_nope_nope"
    r = dash_client.post("/dashboard/login", data={"key": key}, follow_redirects=False)
    assert r.status_code == status and message in r.text
    assert "set-cookie" not in r.headers


def test_login_redirects_only_locally_and_refuses_cross_origin_posts(
    dash_client: TestClient, dash_project: Project
) -> None:
    dash_client.cookies.clear()
    key = dash_project.keys["admin"]
    for target in ("//evil.example/x", "https://evil.example/", "/dashboard/..//evil", "/v1/x"):
        r = dash_client.post(
            "/dashboard/login", data={"key": key, "next": target}, follow_redirects=False
        )
        assert r.status_code == 303 and r.headers["location"] == "/dashboard", target
    cross = dash_client.post(
        "/dashboard/login",
        data={"key": key},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert cross.status_code == 403 and "set-cookie" not in cross.headers
    dash_client.cookies.clear()


def test_session_cookie_expires_and_resists_tampering(dash_project: Project) -> None:
    ring = dash_project.workspace.keys
    sealed = session.seal(ring, "msk_abc_secret", now=1000.0, ttl=60)
    assert session.unseal(ring, sealed, now=1059.0) == "msk_abc_secret"
    assert session.unseal(ring, sealed, now=1061.0) is None  # expired
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    assert session.unseal(ring, flipped, now=1000.0) is None
    assert session.unseal(ring, "%%%", now=1000.0) is None
    assert session.unseal(ring, None) is None
    assert session.safe_next("/dashboard/kpis?x=1") == "/dashboard/kpis?x=1"
    assert session.unseal(ring, session.seal(ring, "k")) == "k"
    assert time.time() > 0


def test_overview_and_segments_match_the_library(
    dash_client: TestClient, dash_project: Project
) -> None:
    ws, h = dash_project.workspace, bearer(dash_project, "analyst")
    ov = dash_client.get("/v1/dashboard/overview", headers=h).json()
    assert ov["counts"] == {**ws.counts(), "segments": len(SEGMENTS), "experiments": 1}
    assert ov["counts"]["events"] == len(dash_project.events)
    sizes = seg_api.sizes(ws)
    assert {s["segment"]: s["size"] for s in ov["segments"]} == dict(
        zip(sizes["segment"], sizes["size"], strict=True)
    )
    for freq in ("D", "W", "M"):
        page = dash_client.get(f"/v1/dashboard/segments?freq={freq}", headers=h).json()
        last: dict[str, int] = {}
        for row in page["trend"]:
            assert row["size"] >= 0
            last[row["segment"]] = row["size"]  # rows are ordered by period
        assert last == {s["segment"]: s["size"] for s in ov["segments"]}
    # independent: size at the end of each day = entered - exited changes up to then
    raw = ws.store.df("SELECT segment, change, changed_at FROM membership_history")
    daily = dash_client.get("/v1/dashboard/segments?freq=D", headers=h).json()["trend"]
    days = sorted({r["period"] for r in daily})
    assert len(daily) == len(days) * len(SEGMENTS)  # quiet days are carried forward
    assert len(days) == (pd.Timestamp(days[-1]) - pd.Timestamp(days[0])).days + 1
    for row in daily:
        seen = raw[
            (raw["segment"] == row["segment"])
            & (raw["changed_at"] < pd.Timestamp(row["period"]) + pd.Timedelta(days=1))
        ]
        want = int((seen["change"] == "entered").sum() - (seen["change"] == "exited").sum())
        assert row["size"] == want, row
    overlap = page["overlap"]
    names = overlap["segments"]
    assert names == sorted(SEGMENTS)
    lib = seg_api.overlap(ws)
    for row in lib.itertuples(index=False):
        i, j = names.index(row.segment_a), names.index(row.segment_b)
        assert overlap["both"][i][j] == overlap["both"][j][i] == row.both
        assert overlap["jaccard"][i][j] == pytest.approx(row.jaccard)
    for i, n in enumerate(names):
        assert overlap["both"][i][i] == last[n] and overlap["jaccard"][i][i] == 1.0
    assert dash_client.get("/v1/dashboard/segments?freq=Y", headers=h).status_code == 422


def test_segment_detail(dash_client: TestClient, dash_project: Project) -> None:
    ws, h = dash_project.workspace, bearer(dash_project, "analyst")
    d = dash_client.get("/v1/dashboard/segments/buyers", headers=h).json()
    assert d["definition"]["rule"]["event"] == "purchase"
    assert d["description"] == "synthetic buyers"
    members = set(
        ws.store.df("SELECT profile_id FROM memberships WHERE segment = 'buyers'")["profile_id"]
    )
    assert d["size"] == len(members)
    assert len(d["members"]) == min(25, len(members))
    assert {m["profile_id"] for m in d["members"]} <= members
    assert d["trend"][-1]["size"] == len(members)
    missing = dash_client.get("/v1/dashboard/segments/no_such", headers=h)
    assert missing.status_code == 404 and "no segment" in missing.json()["detail"]
    bad = dash_client.get("/v1/dashboard/segments/Bad%20Name", headers=h)
    assert bad.status_code == 422


def test_profile_search_view_and_why(dash_client: TestClient, dash_project: Project) -> None:
    ws, h = dash_project.workspace, bearer(dash_project, "analyst")
    one = dash_client.get("/v1/dashboard/profiles?q=user_id:u01", headers=h).json()["items"]
    pid = ws.profile_id("user_id:u01")
    assert one == [{"profile_id": pid, "id_key": "user_id:u01"}]
    prefix = dash_client.get("/v1/dashboard/profiles?q=u0", headers=h).json()["items"]
    assert sorted(p["id_key"] for p in prefix) == [f"user_id:u0{i}" for i in range(10)]
    assert dash_client.get("/v1/dashboard/profiles?q=zzz", headers=h).json()["items"] == []
    for user in ("u01", "u02", "u03"):
        pid = ws.profile_id(f"user_id:{user}")
        view = dash_client.get(f"/v1/dashboard/profiles/{pid}", headers=h).json()
        stored = sorted(
            ws.store.df("SELECT segment FROM memberships WHERE profile_id = ?", [pid])["segment"]
        )
        assert view["segments"] == stored and view["all_segments"] == sorted(SEGMENTS)
        planted = dash_project.events[dash_project.events["user_id"] == user]
        assert len(view["events"]) == min(20, len(planted))
        assert view["identities"][0]["id_key"] == f"user_id:{user}"
        buys = planted[planted["event_type"] == "purchase"]
        assert view["traits"]["orders_30d"] == len(buys)  # every planted event is < 28 days old
        for name in SEGMENTS:
            why = dash_client.get(f"/v1/dashboard/profiles/{pid}/explain/{name}", headers=h)
            assert why.status_code == 200, why.text
            body = why.json()
            lib = seg_api.explain(ws, name, pid)
            assert body["member"] == lib.member == (name in stored)
            assert (
                body["tree"]["condition"] == lib.tree.label
                and body["lines"][1:] == (lib.lines()[1:])
            )
    assert dash_client.get("/v1/dashboard/profiles/nobody", headers=h).status_code == 404


def test_experiment_numbers_equal_the_analysis_and_planted_truth(
    dash_client: TestClient, dash_project: Project
) -> None:
    ws, h = dash_project.workspace, bearer(dash_project, "analyst")
    listed = dash_client.get("/v1/dashboard/experiments", headers=h).json()["items"]
    assert [(e["experiment_key"], e["assigned"], e["exposed"]) for e in listed] == [
        (EXPERIMENT, 80, 80)
    ]
    d = dash_client.get(f"/v1/dashboard/experiments/{EXPERIMENT}", headers=h).json()
    arms = arm_stats_from_events(ws.store, EXPERIMENT, "purchase", "revenue")
    lib = analyze_experiment(sorted(arms, key=lambda a: a.name != "control"), "control")
    frame = lib.to_frame()
    assert [a["variant"] for a in d["arms"]] == ["control", "bold"]
    for got, want in zip(d["results"], frame.to_dict(orient="records"), strict=True):
        for k in ("variant", "metric", "n", "rel_lift", "rel_ci_low", "rel_ci_high", "p_value"):
            assert got[k] == pytest.approx(want[k]), k
    assert sum(a["chance_to_win"] for a in d["arms"]) == pytest.approx(1.0)
    # planted truth: exposure preceded every event, so a converter is a user with a purchase
    assigned = ws.store.df(
        "SELECT i.id_value AS user_id, a.variant FROM experiment_assignments a"
        " JOIN identities i ON i.profile_id = a.profile_id"
    )
    ev = dash_project.events
    buyers = set(ev.loc[ev["event_type"] == "purchase", "user_id"])
    revenue = ev.groupby("user_id")["revenue"].sum()
    for arm in d["arms"]:
        users = assigned.loc[assigned["variant"] == arm["variant"], "user_id"]
        assert arm["n"] == len(users)
        assert arm["conversions"] == len(set(users) & buyers)
        assert arm["revenue_per_user"] == pytest.approx(revenue.reindex(users).fillna(0).mean())
    missing = dash_client.get("/v1/dashboard/experiments/nope", headers=h)
    assert missing.status_code == 404
    badcol = dash_client.get(f"/v1/dashboard/experiments/{EXPERIMENT}?revenue=revenu", headers=h)
    assert badcol.status_code == 400 and "revenue" in badcol.json()["detail"]


def planted_touch_credit(events: pd.DataFrame, which: str) -> dict[str, tuple[float, float]]:
    """First/last-touch (conversions, value) from the planted events, independent of the SQL:
    a journey ends at the user's first purchase and is worth that purchase's revenue."""
    credit: dict[str, tuple[float, float]] = {}
    for _, g in events.sort_values(["timestamp", "event_type"]).groupby("user_id"):
        buys = g[g["event_type"] == "purchase"]
        if buys.empty:
            continue
        first_buy = buys["timestamp"].iloc[0]
        touches = g[(g["event_type"] == "page_view") & (g["timestamp"] <= first_buy)]
        channel = touches["channel"].iloc[0 if which == "first" else -1]
        n, value = credit.get(channel, (0.0, 0.0))
        credit[channel] = (n + 1.0, value + float(buys["revenue"].iloc[0]))
    return credit


def test_attribution_equals_the_models_and_planted_touches(
    dash_client: TestClient, dash_project: Project
) -> None:
    ws, h = dash_project.workspace, bearer(dash_project, "analyst")
    d = dash_client.get("/v1/dashboard/attribution", headers=h).json()
    ev = dash_project.events
    assert d["channel_column"] == "channel" and d["models"] == list(MODELS)
    assert d["touchpoints"] == int((ev["event_type"] == "page_view").sum())
    assert d["converted_journeys"] == ev.loc[ev["event_type"] == "purchase", "user_id"].nunique()
    credit = pd.DataFrame(d["credit"])
    for which in ("first", "last"):
        rows = credit[(credit["model"] == which) & (credit["conversions"] > 0)]
        got = {r.channel: (r.conversions, r.value) for r in rows.itertuples()}
        want = planted_touch_credit(ev, which)
        assert got.keys() == want.keys(), which
        for channel, pair in want.items():
            assert got[channel] == pytest.approx(pair), (which, channel)
    from microseg.api.dashboard.analytics import touchpoints

    tp = touchpoints(ws)
    for model in MODELS:
        lib = attribute(tp, model, value_col="value").set_index("channel")
        mine = credit[credit["model"] == model].set_index("channel")
        for col in ("conversions", "value", "share"):
            assert mine[col].to_dict() == pytest.approx(lib[col].to_dict()), (model, col)
    one = dash_client.get("/v1/dashboard/attribution?model=linear&channel=referrer", headers=h)
    assert one.status_code == 200 and one.json()["converted_journeys"] == 0  # no referrers
    typo = dash_client.get("/v1/dashboard/attribution?channel=chanel", headers=h)
    assert typo.status_code == 400 and "channel" in typo.json()["detail"]
    model = dash_client.get("/v1/dashboard/attribution?model=lineer", headers=h)
    assert model.status_code == 400 and "linear" in model.json()["detail"]


def test_kpis_pass_through_and_degrade_gracefully(
    dash_client: TestClient, dash_project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = bearer(dash_project, "analyst")
    d = dash_client.get("/v1/dashboard/kpis?segment=buyers&freq=W&metric=all", headers=h).json()
    if d["available"]:
        from microseg.measure.kpis import segment_kpis

        frame = segment_kpis(dash_project.workspace.store, segments=["buyers"], freq="W")
        assert len(d["rows"]) == len(frame) > 0
        got = {(r["period"][:10], r["metric"]): r["value"] for r in d["rows"]}
        for row in frame.itertuples(index=False):
            value = got[(str(row.period)[:10], row.metric)]
            assert (value is None and pd.isna(row.value)) or value == pytest.approx(row.value)
        one = dash_client.get("/v1/dashboard/kpis?freq=W", headers=h).json()
        assert one["metric"] == "conversion_rate" and one["metrics"] == d["metrics"]
        assert {r["metric"] for r in one["rows"]} == {"conversion_rate"}
        assert {r["segment"] for r in one["rows"]} == {"(all)", *SEGMENTS}
        last = dash_client.get("/v1/dashboard/kpis?freq=D&periods=3&metric=sessions", headers=h)
        assert len({r["period"] for r in last.json()["rows"]}) == 3
        typo = dash_client.get("/v1/dashboard/kpis?metric=conversion_rat", headers=h)
        assert typo.status_code == 400 and "conversion_rate" in typo.json()["detail"]
    monkeypatch.setitem(sys.modules, "microseg.measure.kpis", None)  # not installed
    gone = dash_client.get("/v1/dashboard/kpis", headers=h)
    assert gone.status_code == 200
    assert gone.json()["available"] is False and "not available" in gone.json()["reason"]


def test_assets_are_local_compressed_and_cached(
    dash_client: TestClient, dash_project: Project
) -> None:
    h = bearer(dash_project, "analyst")
    js = dash_client.get("/dashboard/static/plotly.min.js", headers=h)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers.get("content-encoding") == "gzip" and len(js.content) > 1_000_000
    raw = dash_client.get(
        "/dashboard/static/dashboard.js", headers={**h, "Accept-Encoding": "identity"}
    )
    assert "content-encoding" not in raw.headers and b"Plotly.newPlot" in raw.content
    etag = raw.headers["etag"]
    again = dash_client.get("/dashboard/static/dashboard.js", headers={**h, "If-None-Match": etag})
    assert again.status_code == 304
    for bad in ("nope.js", "..%2Fsession.py", "dashboard.py", ".hidden.js"):
        assert dash_client.get(f"/dashboard/static/{bad}", headers=h).status_code == 404, bad
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


def test_pages_escape_parameters_and_send_security_headers(
    dash_client: TestClient, dash_project: Project
) -> None:
    h = bearer(dash_project, "analyst")
    hostile = '"><script>alert(1)</script>'
    page = dash_client.get("/dashboard/profiles", params={"ref": hostile}, headers=h)
    assert page.status_code == 200
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    for path in (
        "/dashboard",
        "/dashboard/segments",
        "/dashboard/segments/buyers",
        f"/dashboard/experiments/{EXPERIMENT}",
        "/dashboard/kpis",
        "/dashboard/attribution",
        "/dashboard/experiments",
    ):
        r = dash_client.get(path, headers=h)
        assert r.status_code == 200 and "/dashboard/static/plotly.min.js" in r.text, path
    assert dash_client.get("/dashboard/segments/x%3Cy", headers=h).status_code == 422


def test_revoked_key_ends_sessions_and_openapi_documents_the_json_routes(
    dash_client: TestClient, dash_project: Project
) -> None:
    admin = bearer(dash_project, "admin")
    made = dash_client.post(
        "/v1/admin/apikeys", json={"role": "analyst", "name": "short lived"}, headers=admin
    )
    assert made.status_code == 201, made.text
    key_id, secret = made.json()["key_id"], made.json()["key"]
    dash_client.cookies.clear()
    r = dash_client.post("/dashboard/login", data={"key": secret}, follow_redirects=False)
    assert r.status_code == 303
    assert dash_client.get("/dashboard/kpis").status_code == 200
    revoked = dash_client.delete(f"/v1/admin/apikeys/{key_id}", headers=admin)
    assert revoked.status_code in (200, 204), revoked.text
    page = dash_client.get("/dashboard/kpis", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    assert dash_client.get("/v1/dashboard/overview").status_code == 401
    dash_client.cookies.clear()
    schema = dash_client.get("/openapi.json").json()
    op = schema["paths"]["/v1/dashboard/overview"]["get"]
    assert op["security"] == [{"bearer": []}, {"apiKey": []}]
    assert not any(p.startswith("/dashboard") for p in schema["paths"])
