"""Content blocks: YAML validation with file lines, variants per channel/device, rendering
with declared defaults and fallbacks, autoescape, and the compile cache."""

from __future__ import annotations

from datetime import date

import pytest

from microseg.errors import DefinitionError, NotFoundError
from microseg.personalize.content import parse_content, render_block
from microseg.personalize.templates import TemplateCache

CART = """\
blocks:
  cart_reminder:
    description: Abandoned cart nudge
    tags: [cart, retention]
    placeholders:
      first_name: there
      location: {default: your area, description: city or region}
      abandoned_items: {default: []}
      discount_code: ""
      renewal_date: {default: null}
    fallback:
      subject: Your cart is waiting
      text: You left something in your cart.
    variants:
      - id: email_desktop
        channel: email
        device: desktop
        subject: "{{ first_name }}, your cart   is waiting"
        text: |
          Hi {{ first_name }},
          {% for item in abandoned_items %}- {{ item.name }} ({{ item.price }})
          {% endfor %}{% if discount_code %}Use {{ discount_code }} for 10% off.{% endif %}
          Shipping to {{ location }}.
        html: |
          <p>Hi {{ first_name }}</p>
          <ul>{% for item in abandoned_items %}<li>{{ item.name }}</li>{% endfor %}</ul>
          {% if renewal_date %}<p>Renews {{ renewal_date|date('%d %B %Y') }}</p>{% endif %}
      - id: email_mobile
        channel: email
        device: mobile
        subject: "{{ first_name }}: cart"
        text: "{{ abandoned_items|length }} items waiting"
      - id: push
        channel: push
        title: "Still thinking, {{ first_name }}?"
        text: "{{ abandoned_items|map(attribute='name')|join(', ') }} are waiting for you"
        max_chars: 40
      - id: web
        channel: web
        html: "<div>{{ first_name }} · {{ missing_thing.deep.value }}{{ none_value }}</div>"
"""


@pytest.fixture(scope="module")
def block():
    from microseg.personalize.content import ContentBlock

    parsed = parse_content(CART, "content/cart.yaml")
    return ContentBlock("cart_reminder", parsed.blocks["cart_reminder"], 1)


ITEMS = [{"name": "Trail shoes", "price": 89.5}, {"name": "Socks", "price": 9}]


def test_email_desktop_renders_placeholders_and_logic(block) -> None:
    out = render_block(
        block,
        {
            "first_name": "Ana",
            "abandoned_items": ITEMS,
            "discount_code": "SAVE10",
            "location": "Lisbon",
            "renewal_date": date(2026, 12, 1),
        },
        channel="email",
        device="desktop",
    )
    assert out.ok and out.variant == "email_desktop" and out.version == 1
    assert out.subject == "Ana, your cart is waiting"  # whitespace collapsed in subjects
    assert "- Trail shoes (89.5)" in out.text and "Use SAVE10 for 10% off." in out.text
    assert "Shipping to Lisbon." in out.text
    assert "<li>Socks</li>" in out.html and "Renews 01 December 2026" in out.html
    assert out.defaults_used == ()


def test_missing_data_uses_defaults_never_none(block) -> None:
    out = render_block(
        block, {"first_name": None, "location": ""}, channel="email", device="desktop"
    )
    assert out.ok, out.errors
    assert out.subject == "there, your cart is waiting"
    assert "Shipping to your area." in out.text
    assert "Use " not in out.text  # conditional on the empty discount code
    for text in out.parts.values():
        assert "None" not in text and "Undefined" not in text
    assert set(out.defaults_used) >= {"first_name", "location", "abandoned_items", "discount_code"}


def test_undeclared_and_nested_missing_values_render_empty(block) -> None:
    out = render_block(block, {"first_name": "Li", "none_value": None}, channel="web")
    assert out.ok and out.html == "<div>Li · </div>"


def test_device_variants_concise_on_mobile(block) -> None:
    mobile = render_block(block, {"abandoned_items": ITEMS}, channel="email", device="mobile")
    desktop = render_block(block, {"abandoned_items": ITEMS}, channel="email", device="desktop")
    assert mobile.variant == "email_mobile" and mobile.text == "2 items waiting"
    assert len(mobile.text) < len(desktop.text)
    # a device without its own variant falls back to 'any', then to another device
    assert render_block(block, {}, channel="push", device="desktop").variant == "push"
    assert render_block(block, {}, channel="email", device="any").variant in {
        "email_desktop",
        "email_mobile",
    }
    with pytest.raises(NotFoundError, match="no variant for channel 'sms'"):
        render_block(block, {}, channel="sms")


def test_push_text_is_capped(block) -> None:
    items = [{"name": f"Item number {i}"} for i in range(10)]
    out = render_block(
        block, {"first_name": "Bo", "abandoned_items": items}, channel="push", device="mobile"
    )
    assert out.title == "Still thinking, Bo?"
    assert len(out.text) == 40 and out.text.endswith("…")


def test_html_is_autoescaped_text_is_not(block) -> None:
    evil = "<script>alert(1)</script>"
    out = render_block(block, {"first_name": evil}, channel="email", device="desktop")
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert out.text.startswith(f"Hi {evil}")  # plain text parts are not HTML


def test_runtime_error_uses_fallback_not_broken_render() -> None:
    parsed = parse_content(
        "blocks:\n  b:\n    fallback: {subject: Hello, html: 'Hi <there>'}\n    variants:\n"
        "      - {id: e, channel: email, subject: '{{ 1 / n }}', html: '{{ items[0] > 3 }}'}\n"
    )
    spec = parsed.blocks["b"]
    out = render_block(spec, {"n": 0, "items": ["x"]}, channel="email")
    assert not out.ok and out.fallback_used
    assert out.subject == "Hello"
    assert out.html == "Hi &lt;there&gt;"  # static fallback escaped in html parts
    assert any("ZeroDivisionError" in e for e in out.errors)
    ok = render_block(spec, {"n": 2, "items": [5]}, channel="email")
    assert ok.ok and ok.subject == "0.5" and ok.html == "True"


@pytest.mark.parametrize(
    ("yaml_text", "line", "needle"),
    [
        (  # syntax error inside a literal block scalar: template line 3 -> file line 8
            "blocks:\n  b:\n    variants:\n      - id: w\n        channel: web\n        html: |\n"
            "          <p>one</p>\n          <p>two</p>\n          {% if x %}never closed\n",
            9,
            "syntax error",
        ),
        (  # error in a single-line quoted subject
            "blocks:\n  b:\n    variants:\n      - id: e\n        channel: email\n"
            "        subject: 'Hi {{ first_name }'\n        text: ok\n",
            6,
            "syntax error",
        ),
        (
            "blocks:\n  b:\n    variants:\n      - id: w\n        channel: web\n        html: '{{ x|nofilter }}'\n",
            6,
            "No filter named 'nofilter'",
        ),
        ("blocks:\n  b:\n    variantz: []\n", 3, "unknown field 'variantz'"),
        (
            "blocks:\n  b:\n    variants:\n      - id: e\n        channel: email\n        text: hi\n",
            4,
            "subject",
        ),
        (
            "blocks:\n  b:\n    variants:\n      - id: e\n        channel: fax\n        text: hi\n",
            5,
            "channel",
        ),
        (
            "blocks:\n  Bad-Name:\n    variants:\n      - {id: w, channel: web, html: x}\n",
            2,
            "lower_snake_case",
        ),
        (
            "blocks:\n  b:\n    variants:\n      - {id: w, channel: web, html: x}\n      - {id: w, channel: push, text: y}\n",
            5,
            "duplicate variant id",
        ),
    ],
)
def test_bad_definitions_are_refused_with_file_line(yaml_text: str, line: int, needle: str) -> None:
    with pytest.raises(DefinitionError) as info:
        parse_content(yaml_text, "content/bad.yaml")
    matching = [p for p in info.value.problems if needle in str(p)]
    assert matching, [str(p) for p in info.value.problems]
    assert matching[0].file == "content/bad.yaml"
    assert matching[0].line == line, str(matching[0])


def test_compile_once_per_template_source(block) -> None:
    cache = TemplateCache()
    for _ in range(50):
        render_block(block, {"first_name": "A"}, channel="email", device="desktop", cache=cache)
    assert len(cache) == 3  # subject, text, html of one variant — compiled once each
