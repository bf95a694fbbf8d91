"""The loopback registry moved to tests/support/registry.py (unit tests use it too); kept for these imports."""

from ..support.registry import BINARY, available, binary_available, free_port, registry  # noqa: F401
