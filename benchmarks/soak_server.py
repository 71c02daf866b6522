"""``python benchmarks/soak_server.py --project DIR --port N``: the real server plus diagnostics.

Exactly ``python -m microseg.api`` (it calls its ``main``). ``api/server.py`` itself attaches
the memory sampler of :mod:`microseg.bench.soak_diag` when ``MICROSEG_DIAG=1`` is set, so this
entry point only exists for ``bench_soak.py --diag``. (It used to wrap ``create_app`` to attach
the sampler; once the server attached it too, every sample was taken twice.)
"""

from __future__ import annotations

import sys

from microseg.api.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
