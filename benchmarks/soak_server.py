"""``python benchmarks/soak_server.py --project DIR --port N``: the real server plus diagnostics.

Same as ``python -m microseg.api`` (it calls its ``main``), but when ``MICROSEG_DIAG=1`` the
memory sampler of :mod:`microseg.bench.soak_diag` runs inside the server process. It wraps
``microseg.api.server.create_app`` to get hold of the app (for ``app.state.services``), the
real-time bridge and the event loop; nothing else changes. Used by ``bench_soak.py --diag``.
Once the server wires the hook itself (one line in ``api/server.py``), this wrapper can go.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import microseg.api.server as server
from microseg.api.__main__ import main
from microseg.bench import soak_diag

captured: dict[str, Any] = {}
_create_app = server.create_app


def create_app(workspace: Any, settings: Any = None, **kwargs: Any) -> Any:
    app = _create_app(workspace, settings, **kwargs)
    captured.update(app=app, bridge=kwargs.get("realtime"), store=workspace.store)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[None]:
        captured["loop"] = asyncio.get_running_loop()
        async with inner(a):
            captured["thread"] = soak_diag.install_from_env(
                lambda: getattr(app.state, "services", None),
                lambda: captured.get("bridge"),
                lambda: captured.get("store"),
                lambda: captured.get("loop"),
            )
            try:
                yield
            finally:
                thread = captured.get("thread")
                if thread is not None:
                    thread.stop()

    app.router.lifespan_context = lifespan
    return app


server.create_app = create_app

if __name__ == "__main__":
    sys.exit(main())
