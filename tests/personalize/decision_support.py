"""Shared content and decision files for the decision-engine tests (unique module name)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from microseg.api.serving import ProfileState
from microseg.config.yamlio import parse_text
from microseg.personalize.content import ContentBlock, parse_content
from microseg.personalize.decision_rules import Known, Placement, parse_decisions_document
from microseg.personalize.decisions import DecisionEngine
from microseg.store import Store

CONTENT = """\
blocks:
  generic_hero:
    placeholders: {first_name: there}
    variants:
      - id: web
        channel: web
        html: "<h1>Welcome, {{ first_name }}</h1>"
      - id: email
        channel: email
        subject: "News for {{ first_name }}"
        text: "Hello {{ first_name }}"
  cart_hero:
    placeholders: {first_name: there}
    variants:
      - id: web
        channel: web
        html: "<h1>{{ first_name }}, still want {{ trigger.product_id }}?</h1>"
      - id: web_mobile
        channel: web
        device: mobile
        text: "{{ first_name }}: {{ trigger.product_id }} is waiting"
  vip_hero:
    variants:
      - id: web
        channel: web
        html: "<h1>VIP tier {{ tier }}</h1>"
      - id: web_alt
        channel: web
        device: desktop
        html: "<h1>Alt VIP {{ tier }}</h1>"
  promo:
    variants:
      - id: web
        channel: web
        text: "Promo for {{ profile_id }}"
"""

DECISIONS = """\
placements:
  home_hero:
    description: hero banner
    fallback: generic_hero
    rules:
      - name: vip
        priority: 5
        when:
          in: [top_spenders]
          not_in: [holdout]
          traits:
            - {trait: ltv, op: ">=", value: 100}
        serve: {block: vip_hero, variant: web_alt}
      - name: cart
        priority: 10
        when:
          did:
            - {event: add_to_cart, within: 24h, where: {category: [shoes, bags]}}
          did_not:
            - {event: purchase, within: 24h}
        serve: cart_hero
        consent: marketing
        cap: {max: 2, per: 1d}
      - name: promo_all
        priority: 1
        serve: promo
        control: 10
  sidebar:
    fallback: {block: generic_hero}
    rules:
      - name: churn_save
        when:
          in: [churn_risk]
          traits:
            - {trait: tier, op: in, value: [gold, silver]}
        serve: promo
"""


def blocks() -> dict[str, ContentBlock]:
    parsed = parse_content(CONTENT, "content/site.yaml")
    return {n: ContentBlock(n, spec, 1, "content/site.yaml") for n, spec in parsed.blocks.items()}


def placements(text: str = DECISIONS, known: Known | None = None) -> dict[str, Placement]:
    return parse_decisions_document(parse_text(text, "decisions/site.yaml"), known).placements


def engine(text: str = DECISIONS, store: Store | None = None, **kwargs: Any) -> DecisionEngine:
    return DecisionEngine(placements(text), blocks(), None, store=store, **kwargs)


def profile(
    pid: str = "p1", segments: Iterable[str] = (), traits: Mapping[str, Any] | None = None
) -> ProfileState:
    return ProfileState(pid, traits or {}, frozenset(segments))


def write_project_files(root: Path, decisions: str = DECISIONS) -> None:
    (root / "content").mkdir(exist_ok=True)
    (root / "decisions").mkdir(exist_ok=True)
    (root / "content" / "site.yaml").write_text(CONTENT)
    (root / "decisions" / "site.yaml").write_text(decisions)
