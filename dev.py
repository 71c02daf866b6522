#!/usr/bin/env python3
"""Bootstrap: create a virtualenv, install microseg, and run the demo or the tests.

Usage (only python3 >= 3.11 needed):
    python3 dev.py demo      # install, then build the demo project on real data
    python3 dev.py test      # install (with test + Spark extras, and Chromium for the
                             # browser tests when run as root), then run the whole suite
Extra arguments after the verb are passed through (to `microseg demo` or to pytest).
"""

from __future__ import annotations

import hashlib
import os
import shutil
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


def ensure_chromium() -> None:
    """The dashboard tests drive Debian's Chromium; install it when we may (root + apt)."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        print("note: chromium not found; browser tests will skip (CI=true makes them fail)")
        return
    print("installing chromium (apt-get) for the browser tests ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-o", "Dpkg::Use-Pty=0"]
    subprocess.run([*apt, "update"], check=False, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        [*apt, "install", "-y", "--no-install-recommends", "chromium"],
        check=False,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    verb, rest = argv[0], argv[1:]
    if verb == "demo":
        ensure_installed("")
        return subprocess.call([str(BIN / "microseg"), "demo", *rest], cwd=ROOT)
    ensure_installed("dev,spark")
    ensure_chromium()
    # loadfile: a file's tests share one worker, so module-scoped fixtures (projects, the
    # Spark session) are built once rather than once per worker
    workers = ["-n", "2", "--dist", "loadfile"] if not any(a.startswith("-n") for a in rest) else []
    return subprocess.call([str(PY), "-m", "pytest", *workers, *rest], cwd=ROOT)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
