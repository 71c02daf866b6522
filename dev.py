#!/usr/bin/env python3
"""Bootstrap: create a virtualenv, install microseg, and run the demo or the tests.

Usage (only python3 >= 3.11 needed):
    python3 dev.py demo      # install, then build the demo project on real data
    python3 dev.py test      # install (with test extras), then run the whole suite
Extra arguments after the verb are passed through (to `microseg demo` or to pytest).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"


def _stamp(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(extras.encode())
    return digest.hexdigest()


def ensure_installed(extras: str) -> None:
    """Create .venv and (re)install the package when pyproject or extras changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs before any install
        sys.exit("microseg needs python >= 3.11")
    if not PY.exists():
        print("creating virtualenv in .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp_file = VENV / f".microseg-installed-{extras or 'base'}"
    if stamp_file.exists() and stamp_file.read_text() == _stamp(extras):
        return
    print(f"installing microseg[{extras}] ...", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    target = f".[{extras}]" if extras else "."
    subprocess.run([*pip, "-e", target], check=True, cwd=ROOT)
    stamp_file.write_text(_stamp(extras))


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    verb, rest = argv[0], argv[1:]
    if verb == "demo":
        ensure_installed("")
        return subprocess.call([str(BIN / "microseg"), "demo", *rest], cwd=ROOT)
    ensure_installed("dev")
    workers = ["-n", "2"] if not any(a.startswith("-n") for a in rest) else []
    return subprocess.call([str(PY), "-m", "pytest", *workers, *rest], cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
