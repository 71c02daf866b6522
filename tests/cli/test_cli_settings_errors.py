"""Bad server settings from the environment are one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from microseg.api.settings import ApiSettings
from microseg.workspace import Workspace


def test_bad_env_setting_is_one_line(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "p", "p").close()
    env = {**os.environ, "MICROSEG_API_STORE_MEMORY_LIMIT": "lots", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "microseg.cli", "-p", str(tmp_path / "p"), "serve", "--port", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Error: setting store_memory_limit" in done.stderr


def test_store_memory_limit_reaches_the_settings() -> None:
    assert ApiSettings(store_memory_limit="2GB").store_memory_limit == "2GB"
