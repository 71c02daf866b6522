"""GET /v1/decide/{ref}?placement=: rendered decisions with why, from memory, kept current by
the collector; errors as problems; caps across a restart; the plain path unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from api_support import event, iso, make_keys
from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.store import utcnow
from microseg.workspace import Workspace

CONTENT = """\
blocks:
  generic_hero:
    placeholders: {first_name: there}
    variants:
      - {id: web, channel: web, html: "<h1>Welcome, {{ first_name }}</h1>"}
      - {id: email, channel: email, subject: "Hi {{ first_name }}", text: "News"}
  cart_hero:
    placeholders: {first_name: there}
    variants:
      - id: web
        channel: web
        html: "<p>{{ first_name }} from {{ city }}, {{ trigger.product_id }} is waiting</p>"
"""
DECISIONS = """\
placements:
  home_hero:
    fallback: generic_hero
    rules:
      - name: cart
        priority: 10
        when:
          did: [{event: add_to_cart, within: 24h, where: {category: shoes}}]
          did_not: [{event: purchase, within: 24h}]
        serve: cart_hero
        consent: marketing
        cap: {max: 1, per: 1d}
  footer:
    fallback: generic_hero
  banner:
    fallback: generic_hero
    rules:
      - name: big_spender
        when:
          in: [top_spenders]
          traits: [{trait: ltv, op: ">", value: 100}]
        serve: {block: generic_hero, variant: email}
"""


def _project(root: Path, decisions: str | None = DECISIONS) -> None:
    Workspace.init(root, "decide").close()
    (root / "content" / "site.yaml").write_text(CONTENT)
    if decisions is not None:
        (root / "decisions").mkdir(exist_ok=True)
        (root / "decisions" / "site.yaml").write_text(decisions)


def _seed(ws: Workspace, root: Path) -> None:
    path = root / "seed.jsonl"
    path.write_bytes(b"".join(orjson.dumps(event(i, user=f"u{i}")) + b"\n" for i in range(3)))
    ws.import_events(path)
    crm = root / "crm.csv"
    crm.write_text("user_id,first_name,city\nu1,Ana,Lisbon\n")
    ws.import_profiles(crm, id_column="user_id")
    for user in ("u1", "u2"):
        ws.store.execute(
            "INSERT INTO consents VALUES (?, 'marketing', true, 'test', ?, NULL)",
            [ws.profile_id(f"user_id:{user}"), utcnow() - timedelta(days=1)],
        )


class Client:
    def __init__(self, client: TestClient, keys: dict[str, str], ws: Workspace) -> None:
        self.client, self.keys, self.ws = client, keys, ws

    def decide(self, ref: str, query: str = "", status: int = 200) -> dict[str, Any]:
        r = self.client.get(
            f"/v1/decide/{ref}{query}", headers={"X-API-Key": self.keys["decision-reader"]}
        )
        assert r.status_code == status, r.text
        return dict(r.json())

    def post(self, *events: dict[str, Any]) -> None:
        r = self.client.post(
            "/v1/events/batch?wait=true",
            content=orjson.dumps({"events": list(events)}),
            headers={"X-API-Key": self.keys["collector"]},
        )
        assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text

    @property
    def engine(self) -> Any:
        return self.client.app.state.services.decisions  # type: ignore[attr-defined]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Workspace, dict[str, str]]]:
    root = tmp_path / "proj"
    _project(root)
    ws = Workspace.open(root, actor="api")
    _seed(ws, root)
    yield root, ws, make_keys(ws)
    ws.close()


def _app(ws: Workspace, keys: dict[str, str]) -> tuple[TestClient, Client]:
    tc = TestClient(
        create_app(ws, ApiSettings(commit_wait_seconds=20)), raise_server_exceptions=False
    )
    return tc, Client(tc, keys, ws)


def test_realtime_events_change_the_decision_with_why(setup: Any) -> None:
    _root, ws, keys = setup
    tc, api = _app(ws, keys)
    with tc:
        plain = api.decide("u1")
        assert set(plain) == {"profile_id", "segments", "traits", "updated_at"}
        before = api.decide("u1", "?placement=home_hero")
        assert {k: before[k] for k in plain} == plain
        (dec,) = before["decisions"]
        assert (dec["rule"], dec["block"], dec["control"]) == (None, "generic_hero", False)
        assert dec["rendered"] == {"html": "<h1>Welcome, Ana</h1>"}  # PII from the cache
        assert dec["why"]["skipped"][0]["reason"] == "conditions"
        # an add_to_cart posted through the collector is visible to the next decision
        api.post(
            event("c1", user="u1", event_type="add_to_cart", category="shoes", product_id="sku-7")
        )
        (dec,) = api.decide("user_id:u1", "?placement=home_hero&channel=web")["decisions"]
        assert (dec["rule"], dec["block"], dec["version"], dec["variant"]) == (
            "cart",
            "cart_hero",
            0,
            "web",
        )
        assert dec["rendered"] == {"html": "<p>Ana from Lisbon, sku-7 is waiting</p>"}
        why = dec["why"]
        assert [c["passed"] for c in why["conditions"]] == [True, True]
        assert why["conditions"][0]["condition"] == "did add_to_cart category='shoes' within 24h"
        assert why["data"]["events"][0]["product_id"] == "sku-7"
        assert why["data"]["profile_fields"] == ["city", "first_name"]
        assert why["consent"] == {"purpose": "marketing", "granted": True}
        assert why["cap"] == {"max": 1, "per": "1d", "scope": "rule", "used": 1}
        # the cap (1 per day) now holds: fallback, with the cap as the reason
        (dec,) = api.decide("u1", "?placement=home_hero")["decisions"]
        assert dec["rule"] is None and dec["why"]["skipped"][0]["reason"] == "cap"
        # u2: a purchase after the cart means "did not purchase within 24h" fails
        api.post(event("c2", user="u2", event_type="add_to_cart", category="shoes"))
        assert api.decide("u2", "?placement=home_hero")["decisions"][0]["rule"] == "cart"
        api.post(event("p2", user="u2", event_type="purchase", order_id="o1"))
        (dec,) = api.decide("u2", "?placement=home_hero&placement=footer")["decisions"][:1]
        assert dec["rule"] is None
        assert "did not purchase within 24h" in dec["why"]["skipped"][0]["detail"]
        # a profile created after startup: its fields are read once, then cached
        api.post(event("n1", user="newbie", event_type="add_to_cart", category="shoes"))
        out = api.decide("newbie", "?placement=footer&channel=email")
        assert out["decisions"][0]["rendered"] == {"subject": "Hi there", "text": "News"}
        assert api.engine.contexts.misses == 1
        api.decide("newbie", "?placement=footer")
        assert api.engine.contexts.misses == 1


def test_caps_and_consent_across_a_restart(setup: Any) -> None:
    _root, ws, keys = setup
    tc, api = _app(ws, keys)
    with tc:
        api.post(event("c1", user="u1", event_type="add_to_cart", category="shoes"))
        assert api.decide("u1", "?placement=home_hero")["decisions"][0]["rule"] == "cart"
    assert ws.store.scalar("SELECT count(*) FROM decision_impressions") == 1  # flushed on stop
    tc, api = _app(ws, keys)
    with tc:
        (dec,) = api.decide("u1", "?placement=home_hero")["decisions"]
        assert dec["rule"] is None and dec["why"]["skipped"][0]["reason"] == "cap"
        # consent revoked elsewhere (another process, the CLI): picked up by the refresh
        api.post(event("c2", user="u2", event_type="add_to_cart", category="shoes"))
        pid = ws.profile_id("user_id:u2")
        ws.store.execute(
            "INSERT INTO consents VALUES (?, 'marketing', false, 'test', ?, NULL)", [pid, utcnow()]
        )
        api.engine.upkeep()
        (dec,) = api.decide("u2", "?placement=home_hero")["decisions"]
        assert dec["rule"] is None
        assert dec["why"]["skipped"][0] == {
            "rule": "cart",
            "reason": "consent",
            "detail": "marketing",
        }


def test_request_errors_are_problems(setup: Any) -> None:
    _root, ws, keys = setup
    tc, api = _app(ws, keys)
    with tc:
        for query, status, text in [
            ("?placement=home_heroo", 404, "no placement 'home_heroo' (did you mean 'home_hero'?)"),
            ("?placement=home_hero&channel=fax", 422, "channel must be one of web, email, push"),
            ("?placement=home_hero&device=watch", 422, "device must be one of"),
            ("?placement=home_hero&colour=red", 400, "unknown query parameter(s): colour"),
            ("?channel=web", 400, "need at least one ?placement="),
            ("?placement=footer&placement=footer", 400, "distinct placements"),
            ("?placement=footer&channel=web&channel=email", 400, "'channel' may be given once"),
        ]:
            body = api.decide("u1", query, status)
            assert text in body["detail"], (query, body)
        api.decide("ghost", "?placement=footer", 404)
        # a query string without decision parameters keeps the plain answer (as before)
        assert set(api.decide("u1", "?cachebust=1")) == {
            "profile_id",
            "segments",
            "traits",
            "updated_at",
        }
        r = tc.get("/v1/decide/u1?placement=footer", headers={"X-API-Key": keys["collector"]})
        assert r.status_code == 403
        assert r.headers["content-type"] == "application/problem+json"
        spec = tc.get("/openapi.json").json()
        params = spec["paths"]["/v1/decide/{ref}"]["get"]["parameters"]
        assert {"placement", "channel", "device"} <= {p["name"] for p in params}


def test_projects_without_or_with_broken_decision_files(tmp_path: Path) -> None:
    root = tmp_path / "none"
    _project(root, decisions=None)
    with Workspace.open(root) as ws:
        keys = make_keys(ws)
        path = root / "e.jsonl"
        path.write_bytes(orjson.dumps(event(1, user="u1")) + b"\n")
        ws.import_events(path)
        tc, api = _app(ws, keys)
        with tc:
            assert "defines no placements" in api.decide("u1", "?placement=x", 404)["detail"]
            assert api.decide("u1")["segments"] == []
    root = tmp_path / "broken"
    _project(root, decisions=DECISIONS.replace("serve: cart_hero", "serve: cart_hro"))
    with Workspace.open(root) as ws:
        keys = make_keys(ws)
        ws.import_events(path)
        tc, api = _app(ws, keys)
        with tc:
            body = api.decide("u1", "?placement=home_hero", 503)
            assert "unknown content block 'cart_hro' (did you mean 'cart_hero'?)" in body["detail"]
            assert "decisions/site.yaml:" in body["detail"]
            assert api.decide("u1")["profile_id"]  # the plain path still serves


def test_recent_events_are_loaded_from_the_store_at_startup(setup: Any) -> None:
    root, ws, keys = setup
    path = root / "carts.jsonl"
    rows = [
        {
            **event("old", user="u1", event_type="add_to_cart", category="shoes"),
            "timestamp": iso(60 * 30),
        },
        {**event("new", user="u2", event_type="add_to_cart", category="shoes", product_id="sku-3")},
    ]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    ws.import_events(path)
    tc, api = _app(ws, keys)
    with tc:
        assert api.decide("u1", "?placement=home_hero")["decisions"][0]["rule"] is None  # 30h old
        (dec,) = api.decide("u2", "?placement=home_hero")["decisions"]
        assert dec["rule"] == "cart" and dec["why"]["data"]["events"][0]["product_id"] == "sku-3"


def test_changed_profile_fields_are_refreshed_without_a_bulk_reread(setup: Any) -> None:
    root, ws, keys = setup
    tc, api = _app(ws, keys)
    with tc:
        (dec,) = api.decide("u1", "?placement=footer")["decisions"]
        assert dec["rendered"] == {"html": "<h1>Welcome, Ana</h1>"}
        reads = "SELECT target FROM audit_log WHERE action = 'pii.decrypt' ORDER BY logged_at"
        before = ws.store.rows(reads)
        # nothing changed since startup (the CRM import was just before it): no re-reads
        api.engine.upkeep()
        api.engine.upkeep()
        assert ws.store.rows(reads) == before and api.engine.contexts.full_refreshes == 1
        crm = root / "crm2.csv"
        crm.write_text("user_id,first_name,city\nu1,Anabela,Porto\n")
        ws.import_profiles(crm, id_column="user_id")
        api.engine.upkeep()
        (dec,) = api.decide("u1", "?placement=footer")["decisions"]
        assert dec["rendered"] == {"html": "<h1>Welcome, Anabela</h1>"}
        # only the changed profile was decrypted again (one audit row about it, no bulk read)
        after = ws.store.rows(reads)
        assert after[: len(before)] == before
        assert after[len(before) :] == [(ws.profile_id("user_id:u1"),)]
        # a deleted value (erasure, retention) triggers one bulk rebuild that drops it
        ws.store.execute("DELETE FROM pii_vault WHERE field = 'first_name'")
        api.engine.upkeep()
        assert api.engine.contexts.full_refreshes == 2
        (dec,) = api.decide("u1", "?placement=footer")["decisions"]
        assert dec["rendered"] == {"html": "<h1>Welcome, there</h1>"}
        api.engine.contexts.forget(ws.profile_id("user_id:u1"))
        assert api.engine.needs_context(ws.profile_id("user_id:u1"))


def test_realtime_segment_and_trait_changes_are_used_at_once(setup: Any) -> None:
    _root, ws, keys = setup
    tc, api = _app(ws, keys)
    with tc:
        state = tc.app.state.services.state  # type: ignore[attr-defined]
        pid = ws.profile_id("user_id:u2")
        assert api.decide("u2", "?placement=banner")["decisions"][0]["rule"] is None
        state.apply_changes([(pid, "top_spenders", True)])  # as the real-time bridge does
        (dec,) = api.decide("u2", "?placement=banner")["decisions"]
        assert dec["rule"] is None
        assert dec["why"]["skipped"][0]["detail"] == ["trait ltv > 100"]
        state.set_traits(pid, {"ltv": 250.5})
        out = api.decide("u2", "?placement=banner&channel=email")
        assert out["segments"] == ["top_spenders"] and out["traits"] == {"ltv": 250.5}
        (dec,) = out["decisions"]
        assert (dec["rule"], dec["variant"]) == ("big_spender", "email")
        assert dec["why"]["data"]["traits"] == {"ltv": 250.5}
        # the pinned email variant does not exist for web: the block's web variant is used
        (web,) = api.decide("u2", "?placement=banner")["decisions"]
        assert (web["rule"], web["variant"]) == ("big_spender", "web")
