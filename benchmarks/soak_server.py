"""``python benchmarks/soak_server.py --project DIR --port N``: the real server plus diagnostics.

Same as ``python -m microseg.api`` (it calls its ``main``), but with ``MICROSEG_DIAG=1`` the
memory sampler of :mod:`microseg.bench.soak_diag` runs inside the server process: it wraps
``microseg.api.server.create_app`` to call :func:`soak_diag.attach` on the app it builds.
Nothing else changes. Used by ``bench_soak.py --diag``. Once ``api/server.py`` calls
``soak_diag.attach(app, bridge, workspace.store)`` itself, this wrapper can go.
"""

from __future__ import annotations

import sys
from typing import Any

import microseg.api.server as server
from microseg.api.__main__ import main
from microseg.bench import soak_diag

_create_app = server.create_app


def create_app(workspace: Any, settings: Any = None, **kwargs: Any) -> Any:
    app = _create_app(workspace, settings, **kwargs)
    soak_diag.attach(app, kwargs.get("realtime"), workspace.store)
    return app


server.create_app = create_app

if __name__ == "__main__":
    sys.exit(main())
