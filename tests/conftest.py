"""Shared fixtures. Docker-backed tests fail in CI (CI=true) when no daemon answers, and skip
with the reason elsewhere. Testcontainers' reaper (Ryuk) is disabled: its image cannot be pulled
on machines without a registry; every container here is removed by its fixture instead."""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsv4_images import REPO_ROOT  # noqa: E402

pytest_plugins = ["tests.support.timeline"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPORT: dict = {}


def need(condition: bool, reason: str) -> None:
    """Skip outside CI, fail in CI, when a prerequisite is missing."""
    if not condition:
        if IN_CI:
            pytest.fail(f"CI must provide this: {reason}")
        pytest.skip(reason)


def pytest_addoption(parser):
    parser.addoption("--image", action="append", default=[], metavar="TARGET=IMAGE",
                     help="a GPU image to verify for real, e.g. sm120=ghcr.io/acme/dsv4-flash@sha256:... (repeatable)")
    parser.addoption("--hf-cache", default=str(Path.home() / ".cache" / "huggingface"),
                     help="Hugging Face cache mounted into GPU containers")


@pytest.fixture(scope="session")
def gpu_images(request) -> dict:
    images = {}
    for item in request.config.getoption("--image"):
        target, sep, image = item.partition("=")
        if not sep or not image:
            raise pytest.UsageError(f"--image {item!r}: expected TARGET=IMAGE")
        images[target] = image
    return images


@pytest.fixture(scope="session")
def docker_client():
    import docker
    try:
        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:  # any failure to reach the daemon
        need(False, f"no Docker daemon: {' '.join(str(exc).split())[:160]}")
    return client


@pytest.fixture(scope="session")
def report():
    """Figures measured by the tests (never asserted as timings), written to reports/."""
    return REPORT


def pytest_sessionfinish(session, exitstatus):
    """Write the figures; with DSV4_FIGURES_MERGE=1 (`./dev test` runs two sessions side by side) merge them
    into what the other session wrote, under a lock."""
    if REPORT:
        out = REPO_ROOT / "reports"
        out.mkdir(exist_ok=True)
        path = out / "test-figures.json"
        with open(out / ".test-figures.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged = {}
            if os.environ.get("DSV4_FIGURES_MERGE") == "1" and path.exists():
                try:
                    merged = json.loads(path.read_text())
                    if not isinstance(merged, dict):
                        raise ValueError("not a JSON object")
                except (OSError, ValueError) as exc:  # not the sibling run's: a leftover, truncated or edited file
                    print(f"figures: {path} is unreadable ({' '.join(str(exc).split())[:120]}); "
                          "it is replaced by this run's figures", file=sys.stderr)
                    merged = {}
            merged.update(json.loads(json.dumps(REPORT, default=str)))
            path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("measured figures (reports/test-figures.json)")
        for key, value in sorted(REPORT.items()):
            terminalreporter.write_line(f"{key}: {json.dumps(value, default=str)[:400]}")
