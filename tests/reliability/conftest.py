"""Fixtures for tests/reliability live in reliability_support (a unique module name)."""

from reliability_support import api, project  # noqa: F401
