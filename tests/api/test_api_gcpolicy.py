"""GcPolicy: re-freezes the long-lived heap on schedule and still reclaims frozen cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from microseg.api.gcpolicy import GcPolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    gc.collect()
    yield
    gc.unfreeze()
    gc.collect()


def test_refreeze_on_schedule_and_full_collection_reclaims_frozen_cycles() -> None:
    now = [0.0]
    policy = GcPolicy(refreeze_seconds=60, full_seconds=600, clock=lambda: now[0])
    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic GC can free it
    alive = weakref.ref(a)
    now[0] = 30
    policy.tick()
    assert policy.freezes == 0 and gc.get_freeze_count() == 0  # not due yet
    now[0] = 61
    policy.tick()
    assert policy.freezes == 1 and gc.get_freeze_count() > 0
    del a, b
    gc.collect()  # a full collection does not see frozen objects: the cycle survives
    assert alive() is not None
    now[0] = 130
    policy.tick()
    assert policy.freezes == 2
    now[0] = 601
    policy.tick()  # unfreeze + collect everything + freeze again
    assert alive() is None
    assert policy.full_collections == 1 and policy.stats()["cycles_collected"] >= 2
    assert gc.get_freeze_count() > 0


def test_zero_interval_turns_the_policy_off() -> None:
    now = [0.0]
    policy = GcPolicy(refreeze_seconds=0, full_seconds=600, clock=lambda: now[0])
    now[0] = 10_000
    policy.tick()
    assert policy.freezes == 0 and policy.full_collections == 0
    assert gc.get_freeze_count() == 0
