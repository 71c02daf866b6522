"""Fixtures for tests/segments live in segments_support (a unique module name)."""

from segments_support import *  # noqa: F403
