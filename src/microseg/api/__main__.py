"""``python -m microseg.api --project DIR --port N [--dev]``: run the API (same as `microseg serve`)."""

from __future__ import annotations

import argparse
import sys

from microseg.api.server import serve
from microseg.api.settings import ApiSettings
from microseg.errors import MicrosegError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m microseg.api")
    parser.add_argument("--project", default=".")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8321)
    parser.add_argument("--dev", action="store_true", help="dev mode (weak admin key 'dev')")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    try:
        settings = ApiSettings(dev=True) if args.dev else ApiSettings()
        serve(
            args.project,
            host=args.host,
            port=args.port,
            settings=settings,
            log_level=args.log_level,
        )
    except MicrosegError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
