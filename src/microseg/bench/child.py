"""``python -m microseg.bench.child STEP JSON``: run one benchmark step, print its result."""

from __future__ import annotations

import json
import sys

from microseg.bench.runner import MARKER
from microseg.bench.steps import STEPS, peak_rss_mb


def main(argv: list[str]) -> int:
    step, args = argv[0], json.loads(argv[1])
    result = STEPS[step](args)
    result["peak_rss_mb"] = peak_rss_mb()
    print(MARKER + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
