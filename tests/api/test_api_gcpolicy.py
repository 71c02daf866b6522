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


def test_without_auto_full_python_runs_no_full_pass_and_activate_is_undone() -> None:
    before = gc.get_threshold()
    policy = GcPolicy(refreeze_seconds=60, full_seconds=600, auto_full=False)
    policy.activate()
    assert gc.get_threshold()[:2] == before[:2] and gc.get_threshold()[2] >= 2**31 - 1
    assert gc.get_freeze_count() > 0
    policy.deactivate()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    kept = GcPolicy(refreeze_seconds=60, full_seconds=600, auto_full=True)
    kept.activate()
    assert gc.get_threshold() == before  # Python's own full collections stay on
    kept.deactivate()


def test_an_imports_cycles_die_young_instead_of_being_promoted() -> None:
    policy = GcPolicy(refreeze_seconds=60, full_seconds=600, auto_full=False)
    policy.activate()
    try:
        promoted_before = len(gc.get_objects(2))
        refs = []
        with policy.importing():
            assert not gc.isenabled()  # nothing the block allocates is promoted meanwhile
            for _ in range(5_000):  # far past the young threshold: would be collected (and
                a, b = Node(), Node()  # the survivors promoted) several times without it
                a.other, b.other = b, a
                refs.append(weakref.ref(a))
            del a, b
        assert gc.isenabled()
        assert all(r() is None for r in refs)  # freed by the one young collection at the end
        assert len(gc.get_objects(2)) - promoted_before < 100
        stats = policy.stats()
        assert stats["import_collections"] == 1 and stats["import_cycles_collected"] >= 10_000
    finally:
        policy.deactivate()


def test_import_scope_is_inert_with_auto_full_or_a_disabled_collector() -> None:
    with GcPolicy(60, 600, auto_full=True).importing():
        assert gc.isenabled()
    gc.disable()
    try:
        policy = GcPolicy(60, 600, auto_full=False)
        with policy.importing():
            assert not gc.isenabled()
        assert not gc.isenabled()  # whoever disabled it keeps it disabled
        assert policy.young_collections == 0
    finally:
        gc.enable()
