"""Thread priorities: only the background thread gets nicer; imports run in it."""

from __future__ import annotations

import sys
import threading

import pytest

from microseg.api.priority import background_executor, lower_thread_priority, thread_nice

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread priorities are a Linux feature"
)


@linux_only
def test_lower_thread_priority_changes_only_the_calling_thread() -> None:
    before = thread_nice()
    assert before is not None
    seen: dict[str, int | bool | None] = {}

    def worker() -> None:
        seen["done"] = lower_thread_priority(3)
        seen["nice"] = thread_nice()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"done": True, "nice": min(19, before + 3)}
    assert thread_nice() == before  # the caller, and so the rest of the process, unchanged


@linux_only
def test_priority_is_capped_and_zero_is_a_no_op() -> None:
    with background_executor("t-capped", 50) as pool:
        assert pool.submit(thread_nice).result() == 19
    with background_executor("t-same", 0) as pool:
        assert pool.submit(thread_nice).result() == thread_nice()
    assert lower_thread_priority(0) is False
    assert lower_thread_priority(-2) is False
