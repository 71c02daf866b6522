"""Shared fixtures: the real datasets folder and small project factories."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared real datasets; tests needing them skip with a reason when absent."""
    if not DATA.exists():
        pytest.skip(f"shared datasets not found at {DATA}")
    return DATA
