"""Pushing a built image's tags to its registry, with bounded retries."""

from __future__ import annotations

import time

from docker.errors import APIError, DockerException

from .docker_client import said
from .errors import UserError

PUSH_ATTEMPTS = 3


def push(client, ref: str, emit=print, attempts: int = PUSH_ATTEMPTS) -> str:
    """Push one tag; returns the manifest digest. A registry that is down or refuses is one line after `attempts`."""
    repository, tag = ref.rsplit(":", 1)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            digest = None
            for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise APIError(chunk["error"])
                digest = chunk.get("aux", {}).get("Digest", digest)
            if digest:
                return digest
            last = "the registry returned no digest"
        except (APIError, DockerException) as exc:
            last = said(exc)
        if attempt < attempts:
            emit(f"push of {ref} failed (attempt {attempt}/{attempts}): {last[:200]}; retrying")
            time.sleep(2 * attempt)
    raise UserError(f"push of {ref} failed after {attempts} attempts: {last[:300]}")
