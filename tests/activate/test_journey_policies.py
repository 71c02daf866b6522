"""Journey policies: quiet hours defer, frequency caps, consent, re-entry, branches, wait_for,
segment entry/exit and behavioural-condition triggers."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from journey_support import Recorder, World, new_world, parse_journey

from microseg.segments import compute_segments, parse_segment

T0 = datetime(2026, 6, 1, 12, 0)
PEOPLE = ["ann", "bob", "cy", "dee"]


def _world(tmp_path: Path, consent: bool = True) -> World:
    world = new_world(T0)
    world.crm(
        tmp_path,
        [
            {"customer_id": c, "email": f"{c}@x.test", "first_name": c, "timezone": "UTC"}
            for c in PEOPLE
        ],
    )
    if consent:
        for cid in PEOPLE:
            world.consent(cid)
    return world


def _cart_journey(extra: str = "", steps: str | None = None) -> str:
    return (
        "name: j\ntrigger: {event: add_to_cart}\n"
        + extra
        + (
            steps
            or "steps:\n  - id: mail\n    send: {block: we_miss_you_final, purpose: email_marketing}\n"
        )
    )


def test_quiet_hours_defer_the_send_to_the_end_of_the_quiet_period(tmp_path) -> None:
    world = _world(tmp_path)
    journey = parse_journey(_cart_journey("quiet_hours: {start: '21:00', end: '08:00'}\n"))
    rec = Recorder()
    engine = world.engine([journey], {"email": rec})
    world.event("ann", "add_to_cart", datetime(2026, 6, 1, 22, 0))
    report = engine.run(datetime(2026, 6, 1, 22, 5))
    assert report.sends["deferred"] == 1 and rec.sent == []
    assert engine.state("j", world.pids["ann"])["status"] == "completed"  # handed to the ledger
    engine.run(datetime(2026, 6, 2, 7, 59))
    assert rec.sent == []
    assert engine.run(datetime(2026, 6, 2, 8, 1)).retried == 1
    engine.run(datetime(2026, 6, 2, 9, 0))
    assert rec.keys() == [f"j:{world.pids['ann']}:mail:1"]


def test_frequency_cap_skips_and_consent_is_required(tmp_path) -> None:
    world = _world(tmp_path)
    world.consent("dee", granted=False)
    journey = parse_journey(
        _cart_journey("reentry: always\nfrequency_caps: [{max_sends: 1, window: 7d}]\n")
    )
    rec = Recorder()
    engine = world.engine([journey], {"email": rec})
    world.event("ann", "add_to_cart", T0 + timedelta(minutes=1))
    world.event("dee", "add_to_cart", T0 + timedelta(minutes=1))
    engine.run(T0 + timedelta(hours=1))
    world.event("ann", "add_to_cart", T0 + timedelta(days=2))
    report = engine.run(T0 + timedelta(days=2, hours=1))
    assert report.enrolled == {"j": 1} and report.sends["skipped"] == 1
    assert [m.to for m in rec.sent] == ["ann@x.test"]
    ledger = engine.ledger.df()
    skipped = ledger[ledger["status"] == "skipped"].set_index("send_key")["last_error"].to_dict()
    assert skipped[f"j:{world.pids['ann']}:mail:2"].startswith("frequency cap 1 per 7 days")
    assert skipped[f"j:{world.pids['dee']}:mail:1"] == "no consent for 'email_marketing'"


@pytest.mark.parametrize(
    ("reentry", "expected"),
    [("never", 1), ("always", 3), ("{policy: cooldown, cooldown: 3d}", 2)],
)
def test_reentry_policy(tmp_path, reentry: str, expected: int) -> None:
    world = _world(tmp_path)
    journey = parse_journey(_cart_journey(f"reentry: {reentry}\n"))
    rec = Recorder()
    engine = world.engine([journey], {"email": rec})
    for day in (0, 2, 4):  # a cart every two days, each enrolment completes at once
        world.event("bob", "add_to_cart", T0 + timedelta(days=day, minutes=1))
        engine.run(T0 + timedelta(days=day, hours=1))
    assert len(rec.sent) == expected
    assert len(set(rec.keys())) == expected  # every enrolment has its own send key


def test_active_enrolment_is_not_re_entered(tmp_path) -> None:
    world = _world(tmp_path)
    steps = (
        "steps:\n  - id: pause\n    wait: 2d\n"
        "  - id: mail\n    send: {block: we_miss_you_final, purpose: email_marketing}\n"
    )
    journey = parse_journey(_cart_journey("reentry: always\n", steps))
    rec = Recorder()
    engine = world.engine([journey], {"email": rec})
    world.event("cy", "add_to_cart", T0 + timedelta(minutes=1))
    engine.run(T0 + timedelta(hours=1))
    world.event("cy", "add_to_cart", T0 + timedelta(days=1))
    assert engine.run(T0 + timedelta(days=1, hours=1)).enrolled == {"j": 0}
    engine.run(T0 + timedelta(days=1, hours=23))
    assert rec.sent == []  # the wait counts from the first cart: 2 days
    engine.run(T0 + timedelta(days=2, minutes=2))
    assert len(rec.sent) == 1


BRANCHY = """\
name: tiers
trigger: {event: add_to_cart}
steps:
  - id: pick
    branch:
      - if: {trait: engagement, gte: 5}
        goto: vip
      - if: {all: [{segment: shoe_fans}, {consent: email_marketing}]}
        goto: shoes
    else: plain
  - id: vip
    send: {block: renewal_highly_engaged, purpose: email_marketing}
    next: exit
  - id: shoes
    send: {block: renewal_moderately_engaged, purpose: email_marketing}
    next: exit
  - id: plain
    wait_for: purchase
    where: {category: shoes}
    timeout: 2d
    on_event: bought
    on_timeout: nudge
  - id: bought
    exit: converted
  - id: nudge
    send: {block: renewal_lurker, purpose: email_marketing}
"""


def test_branches_on_traits_segments_and_wait_for_event_or_timeout(tmp_path) -> None:
    world = _world(tmp_path)
    world.traits({"ann": {"engagement": 7.0}, "bob": {"engagement": 1.0}})
    shoe_fans = parse_segment(
        {"name": "shoe_fans", "rule": {"event": "product_view", "where": {"category": "shoes"}}}
    )
    for cid in PEOPLE:
        world.event(cid, "add_to_cart", T0 + timedelta(minutes=1), category="x")
    world.event("bob", "product_view", T0 - timedelta(days=1), category="shoes")
    compute_segments(world.store, None, [shoe_fans], as_of=T0)
    rec = Recorder()
    engine = world.engine([parse_journey(BRANCHY)], {"email": rec})
    engine.run(T0 + timedelta(hours=1))
    # cy buys shoes during the wait (matches the filter); dee buys socks (does not)
    world.event("cy", "purchase", T0 + timedelta(days=1), category="shoes")
    world.event("dee", "purchase", T0 + timedelta(days=1), category="socks")
    engine.run(T0 + timedelta(days=1, hours=1))
    engine.run(T0 + timedelta(days=3))
    steps = {m.profile_id: m.data["step"] for m in rec.sent}
    pid = world.pids
    assert steps == {pid["ann"]: "vip", pid["bob"]: "shoes", pid["dee"]: "nudge"}
    assert engine.state("tiers", pid["cy"])["status"] == "exited"
    log = engine.log("tiers", pid["cy"])
    assert "event arrived -> bought" in set(log["detail"])
    assert "timed out -> nudge" in set(engine.log("tiers", pid["dee"])["detail"])


def test_segment_entry_exit_and_behavioural_condition_triggers(tmp_path) -> None:
    world = _world(tmp_path)
    shoppers = parse_segment({"name": "shoppers", "rule": {"event": "add_to_cart", "last": "30d"}})
    abandoners = parse_segment(
        {"name": "abandoners", "rule": {"first": "add_to_cart", "not_then": "purchase",
                                        "within": "24h", "last": "7d"}}
    )  # fmt: skip
    mail = "steps:\n  - id: m\n    send: {block: we_miss_you_final, purpose: email_marketing}\n"
    entry = parse_journey("name: hello\ntrigger: {segment_entry: shoppers}\n" + mail)
    leave = parse_journey("name: bye\ntrigger: {segment_exit: shoppers}\n" + mail)
    cond = parse_journey(
        "name: rescue\ntrigger:\n  condition:\n    all: [{segment: abandoners},"
        " {segment: shoppers}]\n" + mail
    )
    rec = Recorder()
    engine = world.engine([entry, leave, cond], {"email": rec}, segments={"abandoners": abandoners})
    world.event("ann", "add_to_cart", T0 - timedelta(hours=30))  # abandoned > 24 h
    world.event("bob", "add_to_cart", T0 - timedelta(hours=2))  # not yet 24 h
    world.event("cy", "add_to_cart", T0 - timedelta(hours=30))
    world.event("cy", "purchase", T0 - timedelta(hours=29))  # bought: not abandoned
    compute_segments(world.store, None, [shoppers], as_of=T0)
    first = engine.run(T0 + timedelta(minutes=5))
    assert first.enrolled == {"hello": 3, "bye": 0, "rescue": 1}
    second = engine.run(T0 + timedelta(hours=23))  # Bob's cart is now > 24 h old
    assert second.enrolled == {"hello": 0, "bye": 0, "rescue": 1}
    compute_segments(world.store, None, [shoppers], as_of=T0 + timedelta(days=31))
    third = engine.run(T0 + timedelta(days=31, minutes=5))
    assert third.enrolled == {"hello": 0, "bye": 3, "rescue": 0}
    by_journey: dict[str, set[str]] = {}
    for m in rec.sent:
        by_journey.setdefault(m.data["journey"], set()).add(m.to)
    assert by_journey == {
        "hello": {"ann@x.test", "bob@x.test", "cy@x.test"},
        "rescue": {"ann@x.test", "bob@x.test"},
        "bye": {"ann@x.test", "bob@x.test", "cy@x.test"},
    }


def test_a_branch_loop_without_a_wait_stops_with_an_error(tmp_path) -> None:
    world = _world(tmp_path)
    looping = parse_journey(
        "name: loop\ntrigger: {event: add_to_cart}\nsteps:\n"
        "  - id: a\n    branch:\n      - if: {consent: email_marketing}\n        goto: b\n"
        "  - id: b\n    next: a\n    branch:\n      - if: {consent: nothing}\n        goto: a\n"
    )
    engine = world.engine([looping], {"email": Recorder()}, max_steps=25)
    world.event("ann", "add_to_cart", T0 + timedelta(minutes=1))
    engine.run(T0 + timedelta(hours=1))
    state = engine.state("loop", world.pids["ann"])
    assert state["status"] == "error" and state["visit"] == 25
    assert "a loop without a wait" in engine.log("loop", world.pids["ann"])["detail"].iloc[-1]


def test_a_paused_campaign_skips_the_journeys_sends(tmp_path) -> None:
    from microseg.measure.guards import set_campaign_status

    world = _world(tmp_path)
    engine = world.engine(
        [parse_journey(_cart_journey("reentry: always\n"))], {"email": Recorder()}
    )
    set_campaign_status(world.store, "j", "paused", reason="CTR fell", actor="test")
    world.event("ann", "add_to_cart", T0 + timedelta(minutes=1))
    assert engine.run(T0 + timedelta(hours=1)).sends == {"skipped": 1}
    key = f"j:{world.pids['ann']}:mail:1"
    assert engine.ledger.get(key)["last_error"] == "campaign_paused"
    set_campaign_status(world.store, "j", "active", reason="fixed", actor="test")
    world.event("ann", "add_to_cart", T0 + timedelta(hours=2))
    assert engine.run(T0 + timedelta(hours=3)).sends == {"sent": 1}
