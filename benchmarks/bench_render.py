"""Renders per second of a typical content block (compiled once, rendered many times).

Usage: python benchmarks/bench_render.py [--n 20000]

The block is an email (subject + text + HTML with a loop over 3 abandoned items, a
conditional discount and a formatted date) and a mobile push variant; contexts vary per
request the way profile data does. The decision API target is >= 3,000 decisions/s with
rendered templates on one core, so the render itself must stay well above that.
"""

from __future__ import annotations

import argparse
import time
from datetime import date

from microseg.personalize.content import ContentBlock, parse_content, render_block
from microseg.personalize.templates import TemplateCache

BLOCK_YAML = """\
blocks:
  cart_reminder:
    tags: [cart]
    placeholders:
      first_name: there
      location: your area
      abandoned_items: {default: []}
      discount_code: ""
      renewal_date: {default: null}
    fallback: {subject: Your cart is waiting, text: Your cart is waiting.}
    variants:
      - id: email
        channel: email
        device: desktop
        subject: "{{ first_name }}, you left {{ abandoned_items|length }} items behind"
        text: |
          Hi {{ first_name }},
          {% for item in abandoned_items %}- {{ item.name }}: {{ '%.2f'|format(item.price) }} EUR
          {% endfor %}{% if discount_code %}Use {{ discount_code }} for 10% off.{% endif %}
          Free delivery in {{ location }}.
        html: |
          <h1>Hi {{ first_name }}</h1>
          <ul>{% for item in abandoned_items %}<li>{{ item.name }} <b>{{ item.price }}</b></li>{% endfor %}</ul>
          {% if discount_code %}<p>Code <code>{{ discount_code }}</code></p>{% endif %}
          {% if renewal_date %}<p>Renews {{ renewal_date|date('%d %B') }}</p>{% endif %}
      - id: push
        channel: push
        device: mobile
        title: "{{ first_name }}, still interested?"
        text: "{{ abandoned_items|map(attribute='name')|join(', ') }} in your cart"
"""


def contexts(n: int) -> list[dict[str, object]]:
    out = []
    for i in range(n):
        out.append(
            {
                "first_name": None if i % 7 == 0 else f"Name{i}",
                "location": "Porto" if i % 2 else "",
                "abandoned_items": [
                    {"name": f"Item {i}-{j}", "price": 9.5 + j} for j in range(i % 4)
                ],
                "discount_code": "SAVE10" if i % 3 == 0 else "",
                "renewal_date": date(2026, 6, 1 + i % 28) if i % 5 == 0 else None,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000, help="renders per case")
    args = parser.parse_args()
    spec = parse_content(BLOCK_YAML).blocks["cart_reminder"]
    block = ContentBlock("cart_reminder", spec, 1)
    ctxs = contexts(1000)
    cache = TemplateCache()
    t0 = time.perf_counter()
    render_block(block, ctxs[1], channel="email", device="desktop", cache=cache)
    print(f"first render (compiles subject+text+html): {(time.perf_counter() - t0) * 1000:.2f} ms")
    for channel, device in (("email", "desktop"), ("push", "mobile")):
        start = time.perf_counter()
        for i in range(args.n):
            out = render_block(block, ctxs[i % 1000], channel=channel, device=device, cache=cache)
        elapsed = time.perf_counter() - start
        assert out.ok, out.errors
        print(
            f"{channel}/{device}: {args.n / elapsed:,.0f} renders/s ({elapsed / args.n * 1e6:.1f} µs each)"
        )
    print(f"compiled templates in cache: {len(cache)}")


if __name__ == "__main__":
    main()
