"""Property tests: any profile data renders to a usable message — never an exception,
never the text "None", and HTML parts never contain unescaped markup from the data."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from microseg.personalize.content import parse_content, render_block

SPEC = parse_content(
    """\
blocks:
  promo:
    placeholders: {first_name: there, location: your city, abandoned_items: {default: []}}
    fallback: {subject: Hello, text: Hello, html: Hello}
    variants:
      - id: e
        channel: email
        subject: "{{ first_name|title }} in {{ location }}"
        text: "{% for i in abandoned_items %}{{ i.name }} x{{ i.qty }};{% endfor %}{{ renewal_date|date('%d/%m') }}"
        html: "<p>{{ first_name }}</p>{% if vip %}<b>VIP</b>{% endif %}{{ last_purchase.product_id }}"
"""
).blocks["promo"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.dates(min_value=date(1900, 1, 1)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)
keys = st.sampled_from(
    ["first_name", "location", "abandoned_items", "renewal_date", "vip", "last_purchase", "other"]
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=7))
def test_any_context_renders(context: dict[str, object]) -> None:
    out = render_block(SPEC, context, channel="email")  # must not raise
    assert set(out.parts) == {"subject", "text", "html"}
    assert all(isinstance(text, str) for text in out.parts.values())
    assert all(e.split(":", 1)[0] in out.parts for e in out.errors)
    if not out.ok:
        assert out.subject == "Hello" or "subject" not in " ".join(out.errors)
    if context.get("first_name") is None and not any(e.startswith("subject") for e in out.errors):
        assert (out.subject or "").startswith("There")  # declared default, never "None"
    if not isinstance(context.get("last_purchase"), dict):
        assert "None" not in (out.html or "").replace("<p>", "").split("</p>")[-1]
    assert "<script" not in (out.html or "")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=30))
def test_user_text_is_escaped_in_html(name: str) -> None:
    out = render_block(SPEC, {"first_name": name or "x"}, channel="email")
    html = out.html or ""
    assert html.startswith("<p>") and "<" not in html[3 : html.index("</p>")]
