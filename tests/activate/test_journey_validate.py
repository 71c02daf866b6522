"""Journey definition files: the templates validate; mistakes are located with a cause."""

from __future__ import annotations

from pathlib import Path

import pytest
from journey_support import parse_journey

from microseg.activate.journey_model import DateTrigger, Journey, Reentry, TraitTrigger
from microseg.activate.journey_project import install_examples
from microseg.activate.journey_validate import (
    load_journeys,
    load_project_journeys,
    validate_journey_document,
)
from microseg.activate.journeys import JourneyEngine
from microseg.config.project import Project
from microseg.config.yamlio import load_document
from microseg.errors import ConfigError, DefinitionError
from microseg.store import Store


@pytest.fixture()
def project(tmp_path: Path) -> Project:
    root = tmp_path / "proj"
    project = Project.init(root, "demo")
    assert len(install_examples(root)) == 5
    assert install_examples(root) == []  # existing files are kept
    return project


def _problems(project: Project, text: str) -> list[str]:
    path = project.root / "journeys" / "x.yaml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as info:
        validate_journey_document(load_document(path), project)
    return [f"{p.line}: {p.message}" for p in info.value.problems]


def test_template_journeys_validate_against_the_template_project(project: Project) -> None:
    journeys = load_project_journeys(project)
    assert sorted(journeys) == [
        "cart_abandonment",
        "gym_renewal",
        "re_engagement",
        "vip_cart_rescue",
    ]
    gym = journeys["gym_renewal"]
    assert isinstance(gym.trigger, DateTrigger) and gym.trigger.offsets == [-7, -3, -1]
    assert gym.reentry == Reentry(policy="always")
    assert isinstance(journeys["re_engagement"].trigger, TraitTrigger)


def test_reference_mistakes_have_line_and_did_you_mean(project: Project) -> None:
    found = _problems(
        project,
        "name: x\n"
        "trigger: {segment_entry: vip_campain_audience}\n"
        "goal: {event: purchse}\n"
        "steps:\n"
        "  - id: mail\n"
        "    send: {block: cart_abandond_email}\n"
        "    next: wiat\n"
        "  - id: wait\n"
        "    wait_for: purchase\n"
        "    where: {categry: shoes}\n"
        "    timeout: 2d\n"
        "  - id: pick\n"
        "    branch:\n"
        "      - if: {segment: churn_risc}\n"
        "        goto: mail\n"
        "  - id: mail\n"
        "    exit: true\n",
    )
    assert found == [
        "2: unknown segment 'vip_campain_audience' (did you mean 'vip_campaign_audience'?)",
        "3: unknown event type 'purchse' (did you mean 'purchase'?)",
        "6: unknown content block 'cart_abandond_email' (did you mean 'cart_abandoned_email'?)",
        "10: unknown property 'categry' for purchase (did you mean 'category'?)",
        "14: unknown segment 'churn_risc' (did you mean 'churn_risk'?)",
        "16: duplicate step id 'mail' (first at step 1)",
        "7: unknown step 'wiat' (did you mean 'wait'?)",
    ]


def test_shape_mistakes_have_line_and_cause(project: Project) -> None:
    found = _problems(
        project,
        "name: x\n"
        "trigger: {date: renewal_date}\n"
        "reentry: {policy: cooldown}\n"
        "quiet_hours: {start: '21:00', timezone: Mars/Olympus}\n"
        "steps:\n"
        "  - id: a\n"
        "    send: {block: we_miss_you, chanel: email}\n"
        "  - id: b\n"
        "    wait: 2 days\n"
        "  - id: c\n"
        "    teleport: now\n",
    )
    assert found[0] == "2: a date trigger needs 'before' and/or 'after' day offsets"
    assert found[1] == "3: 'cooldown' is required with policy cooldown (and only then)"
    assert "7: unknown field 'chanel' (did you mean 'channel'?)" in found
    assert "9: duration '2 days' must look like 90s, 10m, 24h, 30d or 2w" in found
    assert any(f.startswith("10: not a step: give one of send") for f in found)
    tz = _problems(
        project,
        "name: x\ntrigger: {event: purchase}\nquiet_hours: {timezone: Mars/Olympus}\n"
        "steps:\n  - {id: a, exit: done}\n",
    )
    assert tz == ["3: unknown time zone 'Mars/Olympus'"]
    trig = _problems(
        project, "name: x\ntrigger: {trait: engagement}\nsteps:\n  - {id: a, exit: done}\n"
    )
    assert trig == ["2: a trait trigger needs exactly one of 'drops_below' or 'rises_above'"]


def test_duplicate_journey_names_and_unknown_channel(project: Project, tmp_path: Path) -> None:
    one = tmp_path / "a.yaml"
    one.write_text("name: same\ntrigger: {event: purchase}\nsteps:\n  - {id: a, exit: done}\n")
    two = tmp_path / "b.yaml"
    two.write_text(one.read_text())
    with pytest.raises(DefinitionError, match="journey 'same' is defined twice"):
        load_journeys([one, two])
    journey = parse_journey(
        "name: j\ntrigger: {event: purchase}\nsteps:\n"
        "  - id: a\n    send: {channel: emial, block: b}\n"
    )
    with pytest.raises(ConfigError, match="did you mean 'email'"):
        JourneyEngine(Store(None), [journey], channels={"email": object()})  # type: ignore[dict-item]


def test_step_order_next_and_reserved_exit() -> None:
    journey = Journey.model_validate(
        {
            "name": "j",
            "trigger": {"event": "x"},
            "steps": [
                {"id": "a", "wait": "1h", "next": "c"},
                {"id": "b", "exit": True},
                {"id": "c", "wait": "2h"},
            ],
        }
    )
    assert journey.following("a") == "c" and journey.following("b") == "c"
    assert journey.following("c") is None
    with pytest.raises(ValueError, match="reserved"):
        Journey.model_validate(
            {"name": "j", "trigger": {"event": "x"}, "steps": [{"id": "exit", "wait": "1h"}]}
        )
