"""Seed scenario (b): gym renewal reminders 7/3/1 days before renewal_date, worded by
engagement tier, over a real SMTP server; renewing stops the remaining reminders."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from journey_support import (
    Recorder,
    World,
    email_channel,
    new_world,
    parse_journey,
    smtp_server,
    template_journey,
)

START = datetime(2026, 3, 1, 9, 30)
RENEWAL = "2026-03-20"


def _gym(tmp_path: Path) -> World:
    world = new_world(START - timedelta(days=1))
    members = {
        "hi": ("Hana", "Highly Engaged"),
        "mid": ("Milo", "Moderately Engaged"),
        "low": ("Lea", "Lurker"),
        "renews": ("Rita", "Highly Engaged"),
    }
    world.crm(
        tmp_path,
        [
            {"customer_id": c, "email": f"{c}@gym.test", "first_name": n, "renewal_date": RENEWAL}
            for c, (n, _) in members.items()
        ]
        + [{"customer_id": "nodate", "email": "nodate@gym.test", "first_name": "Ned"}],
    )
    world.traits({c: {"engagement_label": label} for c, (_, label) in members.items()})
    for cid in [*members, "nodate"]:
        world.consent(cid)
    return world


def test_renewal_reminders_at_7_3_1_days_by_tier_and_renewal_stops_the_rest(tmp_path) -> None:
    world = _gym(tmp_path)
    journey = template_journey("gym_renewal")
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        day = START
        while day <= datetime(2026, 3, 21, 9, 30):
            engine.run(day)
            if day.date() == datetime(2026, 3, 14).date():  # Rita renews after the 7-day mail
                world.event("renews", "purchase", day, category="membership", product_id="YEAR")
            day += timedelta(hours=12)
    dates = {c: [m["Date"] for m in inbox.to(f"{c}@gym.test")] for c in ("hi", "mid", "low")}
    assert {c: len(v) for c, v in dates.items()} == {"hi": 3, "mid": 3, "low": 3}
    subjects = [m["Subject"] for m in inbox.to("hi@gym.test")]
    assert subjects == [f"Hana, you have been crushing it - renew in {d} day(s)" for d in (7, 3, 1)]
    assert [m["Subject"] for m in inbox.to("mid@gym.test")][1] == (
        "Milo, your membership renews in 3 day(s)"
    )
    assert [m["Subject"] for m in inbox.to("low@gym.test")][2] == (
        "Lea, we miss you - 1 day(s) left on your membership"
    )
    assert "renews on 2026-03-20" in " ".join(inbox.body(inbox.to("low@gym.test")[0]).split())
    # Rita renewed after the 7-day reminder: nothing after it
    assert [m["Subject"] for m in inbox.to("renews@gym.test")] == [
        "Rita, you have been crushing it - renew in 7 day(s)"
    ]
    assert engine.state("gym_renewal", world.pids["renews"])["status"] == "goal"
    assert inbox.to("nodate@gym.test") == []
    # when each reminder was triggered: 09:00 UTC on the 13th, 17th and 19th
    log = engine.log("gym_renewal", world.pids["hi"])
    enrolled = log[log["action"] == "enrolled"]
    assert list(enrolled["detail"]) == ["2026-03-20|-7", "2026-03-20|-3", "2026-03-20|-1"]
    assert sorted(
        world.store.rows(
            "SELECT entered_at FROM journey_state WHERE journey = 'gym_renewal' AND profile_id = ?",
            [world.pids["hi"]],
        )
    ) == [(datetime(2026, 3, 19, 9, 0),)]


def test_an_engine_down_for_days_sends_only_the_latest_due_reminder(tmp_path) -> None:
    world = _gym(tmp_path)
    journey = template_journey("gym_renewal").model_copy(update={"lookback": "10d"})
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        engine.run(datetime(2026, 3, 12, 9, 30))  # nothing due yet (7 days before = 13th)
        assert inbox.messages == []
        engine.run(datetime(2026, 3, 18, 10, 0))  # 7-day and 3-day both passed while down
        assert [m["Subject"] for m in inbox.to("mid@gym.test")] == [
            "Milo, your membership renews in 3 day(s)"
        ]
        engine.run(datetime(2026, 3, 18, 22, 0))  # same window again: nothing new
        assert len(inbox.to("mid@gym.test")) == 1


def test_next_years_renewal_date_is_a_new_group(tmp_path) -> None:
    """A new renewal date after the goal starts a fresh series (re-entry: always)."""
    world = _gym(tmp_path)
    journey = template_journey("gym_renewal")
    with smtp_server() as (inbox, port):
        engine = world.engine([journey], {"email": email_channel(port)})
        engine.run(datetime(2026, 3, 13, 9, 5))
        world.event("renews", "purchase", datetime(2026, 3, 13, 12), category="membership")
        engine.run(datetime(2026, 3, 13, 13, 0))
        world.store.execute(
            "UPDATE profile_attributes SET value = '2027-03-20' WHERE name = 'renewal_date'"
            " AND profile_id = ?",
            [world.pids["renews"]],
        )
        engine.run(datetime(2026, 3, 17, 9, 5))  # the old date's 3-day mark: stopped
        assert len(inbox.to("renews@gym.test")) == 1
        engine.run(datetime(2027, 3, 13, 9, 5))
        engine.run(datetime(2027, 3, 13, 9, 6))
    assert len(inbox.to("renews@gym.test")) == 2


def test_days_after_a_date_trait_at_a_time_of_day(tmp_path) -> None:
    """``after`` offsets on a date *trait*; the trigger time is the date + N days at ``at``."""
    world = _gym(tmp_path)
    world.traits({"hi": {"joined_on": "2026-03-10"}, "mid": {"joined_on": "not a date"}})
    journey = parse_journey(
        "name: welcome_back\n"
        "trigger: {date: joined_on, source: trait, after: [0, 2], at: '14:30'}\n"
        "reentry: never\n"
        "steps:\n  - id: m\n    send: {block: renewal_lurker, purpose: email_marketing}\n"
    )
    rec = Recorder()
    engine = world.engine([journey], {"email": rec})
    engine.run(datetime(2026, 3, 10, 14, 0))
    assert rec.sent == []
    engine.run(datetime(2026, 3, 10, 14, 31))
    engine.run(datetime(2026, 3, 12, 14, 31))
    assert [m.data["enrolment"] for m in rec.sent] == [1, 2]  # offsets 0 and 2, same group
    log = engine.log("welcome_back")
    assert list(log[log["action"] == "enrolled"]["detail"]) == ["2026-03-10|0", "2026-03-10|2"]
