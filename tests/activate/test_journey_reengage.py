"""Seed scenario (c): re-engagement when the engagement score drops below a threshold
(edge-triggered), with a wait_for-click, a consent branch and a last reminder; real SMTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from journey_support import World, email_channel, new_world, smtp_server, template_journey

T0 = datetime(2026, 5, 4, 12, 0)


def _world(tmp_path: Path) -> World:
    world = new_world(T0)
    people = ["ava", "ben", "cat", "dan", "eve"]
    world.crm(
        tmp_path,
        [{"customer_id": c, "email": f"{c}@shop.test", "first_name": c.title()} for c in people],
    )
    for cid in people:
        world.consent(cid)
    world.traits(
        {"ava": {"engagement": 5.0}, "ben": {"engagement": 1.0}, "cat": {"engagement": 3.0},
         "dan": {"engagement": 4.0}, "eve": {"engagement": 6.0}}
    )  # fmt: skip
    return world


def test_engagement_drop_triggers_offer_then_last_chance(tmp_path) -> None:
    world = _world(tmp_path)
    with smtp_server() as (inbox, port):
        engine = world.engine([template_journey("re_engagement")], {"email": email_channel(port)})
        first = engine.run(T0)  # baseline: Ben is already low, he is recorded, not enrolled
        assert first.enrolled == {"re_engagement": 0} and inbox.messages == []
        world.traits({"ava": {"engagement": 1.5}, "dan": {"engagement": 0.5}})
        world.traits({"eve": {"engagement": 1.9}})
        second = engine.run(T0 + timedelta(days=1))
        assert second.enrolled == {"re_engagement": 3}
        assert sorted(m["To"] for m in inbox.messages) == [
            "ava@shop.test", "dan@shop.test", "eve@shop.test"
        ]  # fmt: skip
        offer = inbox.body(inbox.to("ava@shop.test")[0])
        assert "15.0% off" in offer and "code BACK-" in offer
        # Dan clicks within the 7 days -> no last reminder; Eve withdraws consent -> branch exits
        world.event("dan", "email_click", T0 + timedelta(days=3))
        world.consent("eve", granted=False)
        engine.run(T0 + timedelta(days=3, hours=1))
        assert engine.state("re_engagement", world.pids["dan"])["status"] == "exited"
        # still low but no new drop: the edge trigger does not re-enrol anyone
        engine.run(T0 + timedelta(days=8, hours=1))
    finals = [m["To"] for m in inbox.messages if m["Subject"].endswith("your offer ends soon")]
    assert finals == ["ava@shop.test"]
    assert len(inbox.messages) == 4
    assert engine.state("re_engagement", world.pids["eve"])["status"] == "exited"
    assert engine.state("re_engagement", world.pids["ava"])["status"] == "completed"
    assert engine.state("re_engagement", world.pids["ben"]) is None
    assert engine.state("re_engagement", world.pids["cat"]) is None


def test_a_new_drop_after_recovery_re_enrols_after_the_cooldown(tmp_path) -> None:
    world = _world(tmp_path)
    journey = template_journey("re_engagement")
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        engine.run(T0)
        world.traits({"ben": {"engagement": 4.0}})  # Ben recovers ...
        engine.run(T0 + timedelta(days=1))
        world.traits({"ben": {"engagement": 0.2}})  # ... and drops again: enrolled
        assert engine.run(T0 + timedelta(days=2)).enrolled == {"re_engagement": 1}
        engine.run(T0 + timedelta(days=10))  # 7-day wait over: last reminder
        assert len(inbox.to("ben@shop.test")) == 2
        world.traits({"ben": {"engagement": 4.0}})
        engine.run(T0 + timedelta(days=11))
        world.traits({"ben": {"engagement": 0.1}})  # drop inside the 30-day cooldown
        assert engine.run(T0 + timedelta(days=12)).enrolled == {"re_engagement": 0}
        world.traits({"ben": {"engagement": 4.0}})
        engine.run(T0 + timedelta(days=45))
        world.traits({"ben": {"engagement": 0.1}})  # after the cooldown: enrolled again
        assert engine.run(T0 + timedelta(days=46)).enrolled == {"re_engagement": 1}
        assert engine.state("re_engagement", world.pids["ben"])["enrolment"] == 2
    assert len(inbox.to("ben@shop.test")) == 3
