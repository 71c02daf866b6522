"""GcPolicy: re-freezes the long-lived heap on schedule and still reclaims frozen cycles."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from microseg.api.gcpolicy import GcPauses, GcPolicy


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


def test_without_auto_full_python_runs_no_full_pass_and_activate_is_undone() -> None:
    before = gc.get_threshold()
    policy = GcPolicy(refreeze_seconds=60, full_seconds=600, auto_full=False)
    policy.activate()
    assert gc.get_threshold()[0] == before[0] and min(gc.get_threshold()[1:]) >= 2**31 - 1
    assert gc.get_freeze_count() > 0
    policy.deactivate()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    kept = GcPolicy(refreeze_seconds=60, full_seconds=600, auto_full=True)
    kept.activate()
    assert gc.get_threshold() == before  # Python's own full collections stay on
    kept.deactivate()
    never_full = GcPolicy(refreeze_seconds=60, full_seconds=0, auto_full=False)
    never_full.activate()
    assert gc.get_threshold() == before  # no periodic pass: Python's own collections stay on
    never_full.deactivate()
    rarer = GcPolicy(refreeze_seconds=60, full_seconds=600, auto_full=True, young_threshold=9_000)
    rarer.activate()
    assert gc.get_threshold() == (9_000, *before[1:])
    rarer.deactivate()
    assert gc.get_threshold() == before


def test_pauses_are_counted_by_generation_and_slow_ones_by_thread() -> None:
    pauses = GcPauses(slow_ms=0.0)  # every pause counts as slow here
    gc.callbacks.append(pauses)
    try:

        def churn() -> None:
            for _ in range(3):
                a, b = Node(), Node()
                a.other, b.other = b, a
                del a, b
                gc.collect(0)

        worker = threading.Thread(target=churn, name="churner-7")
        worker.start()
        worker.join()
    finally:
        gc.callbacks.remove(pauses)
    stats = pauses.stats()
    assert stats["gen0"]["collections"] >= 3 and stats["gen0"]["collected"] >= 6
    slow = stats["slow_by_thread (>= 0 ms)"]
    assert slow["churner"]["pauses"] >= 3  # the thread's name without its number
    assert slow["churner"]["max_ms"] <= stats["gen0"]["max_ms"] + 0.1
