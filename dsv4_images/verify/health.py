"""Waiting for a vLLM server to become healthy, failing early when its container dies."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Callable

from ..errors import UserError


def wait_healthy(base_url: str, still_running: Callable[[], bool], timeout: float = 600,
                 describe_failure: Callable[[], str] = lambda: "") -> float:
    """Poll GET /health until it answers 200; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}/health", timeout=5) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        if not still_running():
            raise UserError(f"the server exited before it became healthy{describe_failure()}")
        time.sleep(1)
    raise UserError(f"{base_url} not healthy after {timeout:.0f}s{describe_failure()}")
