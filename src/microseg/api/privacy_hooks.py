"""Make consent changes and erasures take effect at once in the server's in-memory state.

Consent recorded anywhere in the process (HTTP, CLI code, library) is published by
``privacy.consent.consent_registry``; an erasure by ``privacy.erasure.on_erasure``. The
server subscribes its real-time evaluator, serving state and decision engine to both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from microseg.api.realtime import RealtimeBridge
from microseg.api.serving import ServingState
from microseg.privacy.consent import ConsentChange, consent_registry, realtime_subscriber
from microseg.privacy.erasure import on_erasure
from microseg.store import Store


def install_privacy_hooks(
    store: Store,
    state: ServingState,
    realtime: RealtimeBridge | None = None,
    decisions: Any = None,
) -> Callable[[], None]:
    """Subscribe the live components; returns a function that unsubscribes them all."""
    registry = consent_registry(store)
    undo: list[Callable[[], None]] = []
    if realtime is not None:
        undo.append(registry.subscribe(realtime_subscriber(realtime, state)))
    if decisions is not None:

        def to_decisions(change: ConsentChange) -> None:
            decisions.consents.observe(
                change.profile_id,
                change.purpose,
                change.granted,
                change.recorded_at,
                change.expires_at,
            )

        undo.append(registry.subscribe(to_decisions))

    def forget(profile_ids: tuple[str, ...]) -> None:
        for pid in profile_ids:
            state.forget(pid)
            if realtime is not None:
                realtime.forget(pid)
            if decisions is not None:
                decisions.recent.forget(pid)
                if decisions.contexts is not None:
                    decisions.contexts.forget(pid)

    undo.append(on_erasure(store, forget))

    def unsubscribe() -> None:
        for fn in undo:
            fn()

    return unsubscribe
