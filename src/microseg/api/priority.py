"""Thread priorities: background work yields the CPU to the request path.

Linux schedules every thread on its own, so ``setpriority(PRIO_PROCESS, <thread id>)`` makes
one thread nicer and leaves the rest of the process alone. The collector runs its DuckDB
imports and the real-time membership writes in such a thread (setting ``import_nice``): when
the machine is busy, an HTTP thread acknowledging events, or a decision, gets the core first,
and the store work, which is not on the path to visibility (events are evaluated at
acknowledgement), waits. The steps that hold the real-time evaluation lock stay at normal
priority, so a request never waits for a nice thread that the scheduler keeps off the CPU.

A raised nice value cannot be lowered again without privileges; the thread keeps it for life.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


def lower_thread_priority(increment: int) -> bool:
    """Raise the calling thread's nice value by ``increment`` (capped at 19); True if done.

    Only on Linux, where the priority is per thread; elsewhere it would apply to the whole
    process, so nothing is changed and False is returned (as for ``increment <= 0``)."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError:
        return False
    return True


def thread_nice() -> int | None:
    """The calling thread's nice value; None where priorities are not per thread."""
    if not sys.platform.startswith("linux"):
        return None
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def background_executor(name: str, nice: int) -> ThreadPoolExecutor:
    """A one-thread executor whose thread runs ``nice`` steps nicer than the caller."""
    return ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix=name,
        initializer=lower_thread_priority,
        initargs=(nice,),
    )
