"""Seed scenario (a): cart abandonment end to end through a real SMTP server.

add_to_cart, no purchase within 24 h -> one email listing the abandoned items with a
personal, deterministic discount code; a purchase during the wait cancels it.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from journey_support import email_channel, new_world, smtp_server, template_journey

from microseg.activate.journey_model import DiscountSpec
from microseg.activate.journeys import discount_code
from microseg.privacy.crypto import KeyRing

T0 = datetime(2026, 3, 2, 10, 0)  # Monday 10:00 UTC


def _world(tmp_path: Path):  # type: ignore[no-untyped-def]
    world = new_world(T0)
    world.crm(
        tmp_path,
        [
            {"customer_id": "ann", "email": "ann@example.com", "first_name": "Ann"},
            {"customer_id": "bob", "email": "bob@example.com", "first_name": "Bob"},
            {"customer_id": "cy", "email": "cy@example.com", "first_name": "Cy"},
        ],
    )
    for cid in ("ann", "bob", "cy"):
        world.consent(cid)
    return world


def test_cart_abandonment_email_lists_items_with_code_and_checkout_cancels(tmp_path) -> None:
    world = _world(tmp_path)
    journey = template_journey("cart_abandonment")
    world.event("ann", "add_to_cart", T0, product_id="SKU-RED-SHOE", category="shoes", price=79.0)
    world.event("ann", "add_to_cart", T0, product_id="SKU-SOCKS", category="socks", price=9.5)
    world.event("bob", "add_to_cart", T0, product_id="SKU-HAT", category="hats", price=25.0)
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        report = engine.run(world.clock.advance(minutes=5))
        assert report.enrolled == {"cart_abandonment": 2}
        assert {
            engine.state("cart_abandonment", world.pids[c])["status"] for c in ("ann", "bob")
        } == {"waiting"}
        # Bob checks out during the wait -> his enrolment ends, nothing is sent to him
        world.event("bob", "purchase", world.clock.advance(hours=3), product_id="SKU-HAT")
        engine.run(world.clock.now)
        assert engine.state("cart_abandonment", world.pids["bob"])["status"] == "goal"
        assert inbox.messages == []
        # 23 h after the cart: still waiting, nothing sent
        engine.run(datetime(2026, 3, 3, 9, 59))
        assert inbox.messages == []
        # past 24 h: exactly one email to Ann, none to Bob
        report = engine.run(datetime(2026, 3, 3, 10, 1))
        assert report.sends["sent"] == 1
        engine.run(datetime(2026, 3, 3, 11, 0))  # another cycle sends nothing more
    assert len(inbox.messages) == 1 and inbox.to("bob@example.com") == []
    mail = inbox.to("ann@example.com")[0]
    body = inbox.body(mail)
    assert mail["Subject"] == "Ann, your cart is waiting"
    assert "SKU-RED-SHOE (shoes) at 79.0" in body and "SKU-SOCKS (socks)" in body
    assert "2 item(s)" in body and "10.0% off" in body
    expected = discount_code(world.keys, "cart_abandonment", world.pids["ann"], DiscountSpec(
        prefix="CART", length=8))  # fmt: skip
    assert f"Use code {expected} " in body
    assert re.fullmatch(r"CART-[0-9A-Z]{8}", expected)
    state = engine.state("cart_abandonment", world.pids["ann"])
    assert state["status"] == "completed"
    assert mail["X-Microseg-Send-Key"] == f"cart_abandonment:{world.pids['ann']}:remind:1"


def test_discount_codes_are_deterministic_unique_and_keyed() -> None:
    keys = KeyRing.generate()
    spec = DiscountSpec(prefix="CART", length=8)
    codes = {discount_code(keys, "j", f"p{i}", spec) for i in range(20_000)}
    assert len(codes) == 20_000  # 40 bits per code: no collision among 20k profiles
    assert discount_code(keys, "j", "p1", spec) == discount_code(keys, "j", "p1", spec)
    assert discount_code(keys, "j", "p1", spec) != discount_code(keys, "other", "p1", spec)
    assert discount_code(KeyRing.generate(), "j", "p1", spec) != discount_code(
        keys, "j", "p1", spec
    )
    assert not set("ILOU01") & set("".join(c[5:] for c in list(codes)[:500]))


def test_purchase_before_the_sweep_and_out_of_window_carts(tmp_path) -> None:
    world = _world(tmp_path)
    journey = template_journey("cart_abandonment")
    world.event("ann", "add_to_cart", T0, product_id="A")
    world.event("ann", "purchase", T0.replace(minute=30), product_id="A")  # bought before sweep
    world.event("cy", "add_to_cart", datetime(2026, 2, 20), product_id="OLD")  # outside lookback
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        first = engine.run(datetime(2026, 3, 2, 11, 0))
        assert first.enrolled == {"cart_abandonment": 1}
        assert engine.state("cart_abandonment", world.pids["ann"])["status"] == "goal"
        engine.run(datetime(2026, 3, 4, 11, 0))
    assert inbox.messages == []
    assert engine.state("cart_abandonment", world.pids["cy"]) is None


@pytest.mark.parametrize("hours_late", [0, 30])
def test_wait_is_relative_to_the_cart_not_to_the_sweep(tmp_path, hours_late: int) -> None:
    """The 24 h run from the add_to_cart event; a late first sweep fires at once."""
    world = _world(tmp_path)
    journey = template_journey("cart_abandonment").model_copy(update={"lookback": "3d"})
    world.event("cy", "add_to_cart", T0, product_id="X")
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        engine.run(datetime(2026, 3, 2, 10, 30 if not hours_late else 0).replace(
            day=2 + hours_late // 24, hour=(10 + hours_late) % 24))  # fmt: skip
        if not hours_late:
            engine.run(datetime(2026, 3, 3, 10, 0, 1))
        assert len(inbox.to("cy@example.com")) == 1
