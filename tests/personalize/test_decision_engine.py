"""Decision engine: priority order, fallback, did / did-not within T, sticky control share,
caps (also across a restart), consent, and the contents of ``why``."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from decision_support import engine, profile

from microseg.personalize.decisions import DecisionEngine, DecisionRequest, control_bucket
from microseg.store import Store

NOW = datetime(2026, 5, 1, 12, 0, 0)
HOME = DecisionRequest(["home_hero"])


def _cart(eng: DecisionEngine, pid: str = "p1", hours_ago: float = 2, **props: object) -> None:
    props = {"category": "shoes", "product_id": "sku-1", **props}
    eng.recent.add(pid, "add_to_cart", NOW - timedelta(hours=hours_ago), props)


def _grant(eng: DecisionEngine, pid: str = "p1", granted: bool = True, at: datetime = NOW) -> None:
    eng.consents.observe(pid, "marketing", granted, at - timedelta(minutes=1))


def decide_home(eng: DecisionEngine, prof: object, now: datetime = NOW) -> dict:
    return eng.decide(prof, HOME, now)[0]


def test_highest_priority_applicable_rule_wins_and_renders() -> None:
    eng = engine()
    _cart(eng)
    _grant(eng)
    vip = profile("p1", ["top_spenders"], {"ltv": 150.0, "tier": "gold"})
    first = decide_home(eng, vip)
    assert (first["rule"], first["block"], first["variant"]) == ("cart", "cart_hero", "web")
    assert first["rendered"] == {"html": "<h1>there, still want sku-1?</h1>"}
    assert first["control"] is False and first["why"]["skipped"] == []
    # without consent the cart rule is passed over; the pinned VIP variant is served
    assert eng.consents.observe("p1", "marketing", False, NOW)
    second = decide_home(eng, vip)
    assert (second["rule"], second["variant"]) == ("vip", "web_alt")
    assert second["rendered"] == {"html": "<h1>Alt VIP gold</h1>"}
    assert second["why"]["skipped"] == [
        {"rule": "cart", "reason": "consent", "detail": "marketing"}
    ]
    assert second["why"]["consent"] is None
    # in the holdout segment the VIP rule fails too: the catch-all (priority 1) applies
    held = profile("p1", ["top_spenders", "holdout"], {"ltv": 150.0})
    third = decide_home(eng, held)
    assert third["rule"] == "promo_all" or third["control"]
    reasons = [s["reason"] for s in third["why"]["skipped"]]
    assert reasons == ["consent", "conditions"]
    assert third["why"]["skipped"][1]["detail"] == ["not in segment holdout"]


def test_fallback_when_no_rule_applies_and_device_variants() -> None:
    eng = engine()
    out = eng.decide(profile("p9"), DecisionRequest(["sidebar", "home_hero"], "web", "mobile"), NOW)
    side = out[0]
    assert (
        side["placement"] == "sidebar" and side["rule"] is None and side["block"] == "generic_hero"
    )
    assert side["why"]["fallback"] is True
    assert side["why"]["skipped"][0]["detail"] == [
        "in segment churn_risk",
        "trait tier in ['gold', 'silver']",
    ]
    assert side["rendered"] == {"html": "<h1>Welcome, there</h1>"}
    email = eng.decide(profile("p9"), DecisionRequest(["sidebar"], "email"), NOW)[0]
    assert email["rendered"] == {"subject": "News for there", "text": "Hello there"}
    # push: no block has a push variant -> the fallback says so instead of failing
    push = eng.decide(profile("p9"), DecisionRequest(["sidebar"], "push"), NOW)[0]
    assert push["rendered"] is None and "no variant" in push["why"]["error"]
    # trait in-list matches
    churn = profile("p9", ["churn_risk"], {"tier": "silver"})
    assert eng.decide(churn, DecisionRequest(["sidebar"]), NOW)[0]["rule"] == "churn_save"
    # the mobile device variant of the cart block
    _cart(eng, "p9")
    _grant(eng, "p9")
    mob = eng.decide(profile("p9"), DecisionRequest(["home_hero"], "web", "mobile"), NOW)[0]
    assert mob["variant"] == "web_mobile" and mob["rendered"] == {"text": "there: sku-1 is waiting"}


def test_did_and_did_not_within_the_window() -> None:
    eng = engine()
    _grant(eng)
    plain = profile("p1")
    assert decide_home(eng, plain)["rule"] != "cart"
    _cart(eng, hours_ago=30)  # too old
    assert decide_home(eng, plain)["rule"] != "cart"
    _cart(eng, hours_ago=3, category="hats")  # wrong category
    out = decide_home(eng, plain)
    assert out["rule"] != "cart"
    failed = out["why"]["skipped"][0]["detail"]
    assert failed == ["did add_to_cart category=['shoes', 'bags'] within 24h"]
    _cart(eng, hours_ago=2, category="bags", product_id="sku-9")
    hit = decide_home(eng, plain)
    assert hit["rule"] == "cart" and "sku-9" in hit["rendered"]["html"]
    did = hit["why"]["conditions"][0]
    assert did["passed"] and did["value"] == (NOW - timedelta(hours=2)).isoformat()
    assert hit["why"]["data"]["events"][0]["product_id"] == "sku-9"
    # a purchase after the cart: "did not purchase within 24h" fails
    eng.recent.add("p1", "purchase", NOW - timedelta(hours=1), {})
    after = decide_home(eng, plain)
    assert after["rule"] != "cart"
    assert after["why"]["skipped"][0]["detail"] == ["did not purchase within 24h"]
    # ...until the purchase is older than 24h (and the cart still within 24h is needed)
    later = NOW + timedelta(hours=23, minutes=30)
    assert decide_home(eng, plain, later)["rule"] != "cart"  # purchase 24.5h old, cart 25.5h
    _cart(eng, hours_ago=-23)  # a new cart 23h after NOW
    assert decide_home(eng, plain, NOW + timedelta(hours=23, minutes=30))["rule"] == "cart"


def test_sticky_control_group_has_the_configured_share() -> None:
    eng = engine()
    n = 20_000
    held = []
    for i in range(n):
        out = decide_home(eng, profile(f"p{i}"))
        assert out["rule"] == "promo_all"
        if out["control"]:
            assert out["block"] == "generic_hero" and out["why"]["control"]["held_out"]
            held.append(f"p{i}")
        else:
            assert out["block"] == "promo" and out["rendered"] == {"text": f"Promo for p{i}"}
    share = len(held) / n
    assert abs(share - 0.10) < 0.02, share
    # sticky: the same profiles are held out again, and the bucket is the documented hash
    again = [p for p in held[:200] if decide_home(eng, profile(p))["control"]]
    assert again == held[:200]
    assert all(control_bucket(p, "home_hero", "promo_all") < 10 for p in held)


def test_frequency_cap_and_window() -> None:
    eng = engine()
    _cart(eng)
    _grant(eng)
    p = profile("p1")
    caps = [decide_home(eng, p)["why"]["cap"] for _ in range(2)]
    assert [c["used"] for c in caps] == [1, 2] and caps[0]["max"] == 2
    third = decide_home(eng, p)
    assert third["rule"] == "promo_all" or third["control"]
    skipped = third["why"]["skipped"][0]
    assert skipped["reason"] == "cap" and skipped["detail"]["used"] == 2
    # a day later the window has passed (and a new cart event makes the rule apply)
    _cart(eng, hours_ago=-24)
    assert decide_home(eng, p, NOW + timedelta(days=1, minutes=1))["rule"] == "cart"


def test_caps_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    store = Store(path)
    eng = engine(store=store)
    _cart(eng)
    _grant(eng)
    for _ in range(2):
        assert decide_home(eng, profile("p1"))["rule"] == "cart"
    assert eng.impressions.pending == 2
    assert eng.impressions.flush(store, NOW) == 2  # one batched insert
    assert store.scalar("SELECT count(*) FROM decision_impressions") == 2
    store.close()
    store = Store(path)
    fresh = engine(store=store)
    counts = fresh.load(NOW)
    assert counts["impressions"] == 2
    _cart(fresh)
    _grant(fresh)
    out = decide_home(fresh, profile("p1"))
    assert out["rule"] != "cart" and out["why"]["skipped"][0]["reason"] == "cap"
    # rows older than every cap window are deleted on flush
    later = NOW + timedelta(days=3)
    _cart(fresh, "p2", hours_ago=-70)
    _grant(fresh, "p2")
    assert decide_home(fresh, profile("p2"), later)["rule"] == "cart"
    assert fresh.impressions.flush(store, later) == 1
    assert store.scalar("SELECT count(*) FROM decision_impressions") == 1
    store.close()


def test_consent_revocation_and_expiry_from_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.duckdb")
    eng = engine(store=store)
    _cart(eng)
    eng.consents.record(store, "p1", "marketing", True, recorded_at=NOW - timedelta(hours=1))
    assert decide_home(eng, profile("p1"))["why"]["consent"] == {
        "purpose": "marketing",
        "granted": True,
    }
    # a revocation written by someone else reaches the engine through refresh()
    store.execute(
        "INSERT INTO consents VALUES ('p1', 'marketing', false, 'cli', ?, NULL)",
        [NOW - timedelta(minutes=5)],
    )
    assert eng.consents.refresh(store) is True
    assert eng.consents.refresh(store) is False  # nothing new: one count query
    out = decide_home(eng, profile("p1"))
    assert out["rule"] != "cart" and out["why"]["skipped"][0]["reason"] == "consent"
    # an expired grant does not count; a fresh engine loads the latest state
    eng.consents.record(
        store,
        "p1",
        "marketing",
        True,
        recorded_at=NOW - timedelta(minutes=1),
        expires_at=NOW - timedelta(seconds=1),
    )
    assert decide_home(eng, profile("p1"))["rule"] != "cart"
    fresh = engine(store=store)
    fresh.load(NOW)
    assert fresh.consents.granted("p1", "marketing", NOW - timedelta(seconds=30))
    assert not fresh.consents.granted("p1", "marketing", NOW)
    store.close()


def test_why_lists_conditions_values_and_data() -> None:
    eng = engine()
    prof = profile("p1", ["top_spenders"], {"ltv": 150.0, "tier": "gold"})
    eng.consents.observe("p1", "marketing", False, NOW)
    why = decide_home(eng, prof)["why"]
    assert why["segments"] == ["top_spenders"]
    assert why["conditions"] == [
        {"condition": "in segment top_spenders", "value": True, "passed": True},
        {"condition": "not in segment holdout", "value": False, "passed": True},
        {"condition": "trait ltv >= 100", "value": 150.0, "passed": True},
    ]
    assert why["data"]["traits"] == {"ltv": 150.0}
    assert why["cap"] is None and why["control"] is None
    low = decide_home(eng, profile("p1", ["top_spenders"], {"ltv": 99.0}))
    assert low["why"]["skipped"][1]["detail"] == ["trait ltv >= 100"]
    missing = decide_home(eng, profile("p1", ["top_spenders"], {}))
    assert missing["rule"] != "vip"


def test_cart_context_matches_the_profile_context_loader_shape() -> None:
    from decision_support import placements

    from microseg.personalize.content import ContentBlock, parse_content

    content = parse_content(
        """\
blocks:
  basket:
    placeholders: {abandoned_items: {default: []}}
    variants:
      - id: web
        channel: web
        text: "{% for i in abandoned_items %}{{ i.product_id }}/{{ i.price }} {% endfor %}|{{ last_purchase.order_id }}"
"""
    )
    blocks = {"basket": ContentBlock("basket", content.blocks["basket"], 1)}
    rules = "placements:\n  cart_box:\n    fallback: basket\n"
    eng = DecisionEngine(placements(rules), blocks, None)
    assert "*" in eng.recent.watch["add_to_cart"] and "*" in eng.recent.watch["purchase"]
    add = eng.recent.add
    add("p1", "add_to_cart", NOW - timedelta(hours=5), {"product_id": "a", "price": 1.0})
    add("p1", "purchase", NOW - timedelta(hours=4), {"order_id": "o-1", "user_id": "u"})
    add("p1", "add_to_cart", NOW - timedelta(hours=3), {"product_id": "b", "price": 2.5})
    add("p1", "add_to_cart", NOW - timedelta(hours=1), {"product_id": "c", "price": 3.0})
    out = eng.decide(profile("p1"), DecisionRequest(["cart_box"]), NOW)[0]
    # cart since the last purchase, newest first; internal columns (user_id) are not kept
    assert out["rendered"] == {"text": "c/3.0 b/2.5 |o-1"}
    assert "user_id" not in eng.recent.of("p1")[1].props
    assert eng.decide(profile("p2"), DecisionRequest(["cart_box"]), NOW)[0]["rendered"] == {
        "text": "|"
    }
