"""Decision files: schema, references with did-you-mean and file lines, injection inertness."""

from __future__ import annotations

from pathlib import Path

import pytest
from decision_support import DECISIONS, engine, placements, profile, write_project_files

from microseg.config.project import Project
from microseg.config.yamlio import load_document, parse_text
from microseg.errors import DefinitionError
from microseg.personalize.decision_rules import (
    Known,
    parse_decisions_document,
    validate_decisions_document,
)
from microseg.personalize.decisions import DecisionEngine, DecisionRequest
from microseg.workspace import Workspace

KNOWN = Known(
    segments=frozenset({"top_spenders", "holdout", "churn_risk"}),
    blocks={
        "generic_hero": frozenset({"web", "email"}),
        "cart_hero": frozenset({"web", "web_mobile"}),
        "vip_hero": frozenset({"web", "web_alt"}),
        "promo": frozenset({"web"}),
    },
    events={"add_to_cart": frozenset({"category", "product_id"}), "purchase": frozenset()},
    traits=frozenset({"ltv", "tier"}),
)


def problems(text: str, known: Known = KNOWN) -> list[tuple[int | None, str]]:
    with pytest.raises(DefinitionError) as info:
        parse_decisions_document(parse_text(text, "decisions/x.yaml"), known)
    assert all(p.file == "decisions/x.yaml" for p in info.value.problems)
    return [(p.line, p.message) for p in info.value.problems]


def test_the_example_parses_and_orders_rules_by_priority() -> None:
    home = placements(DECISIONS, KNOWN)["home_hero"]
    assert [r.name for r in home.ordered()] == ["cart", "vip", "promo_all"]
    assert home.fallback.block == "generic_hero"
    cart = next(r for r in home.rules if r.name == "cart")
    assert cart.serve.block == "cart_hero" and cart.cap is not None and cart.cap.max == 2
    assert cart.when.did[0].where == {"category": ["shoes", "bags"]}


def test_unknown_references_have_lines_and_suggestions() -> None:
    text = DECISIONS.replace("in: [top_spenders]", "in: [top_spender]")
    text = text.replace("serve: cart_hero", "serve: cart_heroo")
    text = text.replace("{event: purchase, within: 24h}", "{event: purchse, within: 24h}")
    text = text.replace("where: {category:", "where: {categry:")
    text = text.replace("variant: web_alt", "variant: web_alt2")
    text = text.replace("{trait: ltv,", "{trait: lvt,")
    found = problems(text)
    lines = text.splitlines()
    by_msg = {m: line for line, m in found}
    expect = {
        "unknown segment 'top_spender' (did you mean 'top_spenders'?)": "in: [top_spender]",
        "unknown content block 'cart_heroo' (did you mean 'cart_hero'?)": "serve: cart_heroo",
        "unknown event type 'purchse' (did you mean 'purchase'?)": "event: purchse",
        "event 'add_to_cart' has no property 'categry' (did you mean 'category'?)": "categry",
        "unknown trait 'lvt' (did you mean 'ltv'?)": "trait: lvt",
    }
    for message, snippet in expect.items():
        assert message in by_msg, found
        assert snippet in lines[by_msg[message] - 1], (message, by_msg[message])
    pinned = [m for _, m in found if m.startswith("block 'vip_hero' has no variant 'web_alt2'")]
    assert pinned and "did you mean 'web_alt'" in pinned[0]


def test_schema_errors_point_at_the_line() -> None:
    text = DECISIONS.replace("priority: 10", "prioirty: 10")
    ((line, msg),) = problems(text)
    assert msg == "unknown field 'prioirty' (did you mean 'priority'?)"
    assert "prioirty" in text.splitlines()[line - 1]
    bad_window = DECISIONS.replace("within: 24h}", "within: 1 day}", 1)
    ((line, msg),) = problems(bad_window)
    assert "must look like 90s, 10m, 24h, 30d or 2w" in msg
    assert "1 day" in bad_window.splitlines()[line - 1]
    for old, new, expected in [
        ("control: 10", "control: 150", "less than or equal to 100"),
        ("{max: 2, per: 1d}", "{max: 0, per: 1d}", "greater than 0"),
        ('op: ">=", value: 100', 'op: ">=", value: [1, 2]', "needs a single value"),
        ("op: in, value: [gold, silver]", "op: in, value: gold", "needs a non-empty list"),
        ("within: 24h, where", "within: 120d, where", "longer than the 90 days"),
    ]:
        assert old in DECISIONS, old
        found = problems(DECISIONS.replace(old, new))
        assert any(expected in m for _, m in found), found
    duplicate = DECISIONS.replace("name: promo_all", "name: vip")
    ((line, msg),) = problems(duplicate)
    assert msg == "duplicate rule name 'vip' in placement 'home_hero'"
    assert duplicate.splitlines()[line - 1].strip() == "- name: vip"
    assert problems("") == [(1, "decisions file is empty; expected 'placements:'")]


def test_injection_in_names_is_refused_and_in_values_is_inert() -> None:
    text = DECISIONS.replace("name: promo_all", 'name: "x\'; DROP TABLE events; --"')
    ((line, msg),) = problems(text)
    assert "must be lower_snake_case" in msg and "DROP TABLE" in text.splitlines()[line - 1]
    text = DECISIONS.replace("in: [top_spenders]", 'in: ["top\\"; DELETE FROM traits"]')
    assert any("segment" in m and "lower_snake_case" in m for _, m in problems(text))
    # values are compared in Python, never spliced into SQL or templates
    sneaky = DECISIONS.replace("[shoes, bags]", '["shoes\'; DROP TABLE events; --", "{{ 7*7 }}"]')
    eng = engine(sneaky)
    from datetime import datetime, timedelta

    now = datetime(2026, 5, 1)
    eng.recent.add("p1", "add_to_cart", now - timedelta(hours=1), {"category": "{{ 7*7 }}"})
    eng.consents.observe("p1", "marketing", True, now - timedelta(hours=2))
    out = eng.decide(
        profile("p1", traits={"tier": "<script>x</script>"}), DecisionRequest(["home_hero"]), now
    )[0]
    assert out["rule"] == "cart"
    evil = profile("p2", ["top_spenders"], {"ltv": 500, "tier": "<script>{{ 7*7 }}</script>"})
    vip = eng.decide(evil, DecisionRequest(["home_hero"]), now)[0]
    assert vip["rendered"]["html"] == "<h1>Alt VIP &lt;script&gt;{{ 7*7 }}&lt;/script&gt;</h1>"


def test_project_validator_and_engine_from_project(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    Workspace.init(root, "dec").close()
    write_project_files(root)
    project = Project.load(root)
    parsed = validate_decisions_document(load_document(root / "decisions" / "site.yaml"), project)
    assert set(parsed.placements) == {"home_hero", "sidebar"}
    # unknown event type against the project's taxonomy, with the line
    bad = DECISIONS.replace("event: add_to_cart", "event: add_to_kart")
    (root / "decisions" / "site.yaml").write_text(bad)
    with pytest.raises(DefinitionError) as info:
        validate_decisions_document(load_document(root / "decisions" / "site.yaml"), project)
    (problem,) = info.value.problems
    assert problem.message == "unknown event type 'add_to_kart' (did you mean 'add_to_cart'?)"
    assert "add_to_kart" in bad.splitlines()[problem.line - 1]
    (root / "decisions" / "site.yaml").write_text(DECISIONS)
    with Workspace.open(root) as ws:
        eng = DecisionEngine.from_project(root, None, store=ws.store, settings=ws.settings)
        assert eng is not None and set(eng.placements) == {"home_hero", "sidebar"}
        assert eng.blocks["promo"].version == 0  # from content/*.yaml (not stored yet)
        assert eng.recent.watch == {
            "add_to_cart": frozenset({"category", "product_id"}),
            "purchase": frozenset({"product_id"}),
        }
        (root / "decisions" / "other.yaml").write_text(
            "placements:\n  home_hero:\n    fallback: promo\n"
        )
        with pytest.raises(DefinitionError) as info:
            DecisionEngine.from_project(root, None, store=ws.store, settings=ws.settings)
        assert "placement 'home_hero' is already defined in" in info.value.problems[0].message


def test_declared_consent_purposes() -> None:
    from dataclasses import replace

    known = replace(KNOWN, purposes=frozenset({"marketing_email", "analytics"}))
    found = problems(DECISIONS.replace("consent: marketing", "consent: marketing_emial"), known)
    (line, msg), *_ = found
    assert (
        "consent: marketing_emial"
        in DECISIONS.replace("marketing", "marketing_emial").splitlines()[line - 1]
    )
    assert msg.startswith("unknown consent purpose 'marketing_emial' (did you mean")
    assert "declared: analytics, marketing_email" in msg
