"""The Docker daemon: a client for it, and its failures as one line."""

from __future__ import annotations

import os
import shutil

import docker
from docker.errors import DockerException
from requests import RequestException

from .errors import UserError


def connect(timeout: int = 120) -> docker.DockerClient:
    """A client for the local daemon, or one clear line saying why there is none."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise UserError(f"no Docker daemon at {where}: {' '.join(str(exc).split())[:200]}") from None


def said(exc: Exception) -> str:
    """What a Docker error says, on one line (the daemon's own explanation when it gave one)."""
    return " ".join(str(getattr(exc, "explanation", None) or exc).split())


def is_daemon_failure(exc: Exception) -> bool:
    return isinstance(exc, (DockerException, RequestException))


def explain_failure(exc: Exception) -> str:
    """What the daemon said, on one line; for a full disk, how much is free where and what frees more."""
    message = said(exc)
    if "no space left on device" not in message:
        return f"the Docker daemon failed: {message[:300]}"
    root = "/var/lib/docker"  # the default DockerRootDir; the daemon did not say which disk
    free = f"{shutil.disk_usage(root).free / 1e9:.1f} GB free on {root}" if os.path.isdir(root) else "disk full"
    return (f"the Docker daemon ran out of disk space ({free}): {message[:200]}; "
            "`docker builder prune` and `docker image prune` free the build cache and unused images")
