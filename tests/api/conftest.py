"""Fixtures for tests/api live in api_support (a unique module name)."""

from api_support import *  # noqa: F403
