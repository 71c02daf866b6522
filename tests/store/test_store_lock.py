"""``Store.lock_held_here``: whether the calling thread holds the store's lock."""

from __future__ import annotations

import threading

from microseg.store import Store


def test_only_the_holding_thread_sees_the_lock_as_its_own() -> None:
    store = Store()
    seen: list[bool] = []

    def ask() -> None:
        seen.append(store.lock_held_here())

    try:
        assert not store.lock_held_here()
        with store.lock:
            with store.lock:  # re-entered: still this thread's
                assert store.lock_held_here()
            assert store.lock_held_here()
            other = threading.Thread(target=ask)
            other.start()
            other.join()
        assert seen == [False]  # held, but by another thread
        assert not store.lock_held_here()
    finally:
        store.close()
