"""A real registry (Debian's docker-registry 2.8, the CNCF distribution server) on loopback, for the
integration tests that push with Docker and the unit tests of dsv4_images/attest that speak its HTTP API."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from contextlib import contextmanager
from pathlib import Path

BINARY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def registry(root: Path, read_only: bool = False):
    """Serve a registry on 127.0.0.1:<free port> with its storage under root; yields 'host:port'."""
    port = free_port()
    (root / "storage").mkdir(parents=True, exist_ok=True)
    maintenance = "  maintenance:\n    readonly:\n      enabled: true\n" if read_only else ""
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
                      f"  delete:\n    enabled: true\n{maintenance}http:\n  addr: 127.0.0.1:{port}\n")
    log = open(root / "registry.log", "w")
    process = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"docker-registry did not start: {(root / 'registry.log').read_text()[-500:]}")
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def binary_available() -> bool:
    """The registry server alone (tests that talk to it over HTTP, with no Docker)."""
    return Path(BINARY).exists()


def available() -> bool:
    """The registry server and a docker CLI (tests that push with Docker)."""
    return binary_available() and shutil.which("docker") is not None


@pytest.fixture
def no_docker_login(tmp_path, monkeypatch):
    """The user's own ~/.docker/config.json must not change what a registry test sees."""
    (tmp_path / "docker-config").mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
