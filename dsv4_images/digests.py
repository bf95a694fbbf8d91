"""`build.py resolve-digests`: ask Docker Hub what each pinned base tag points at today.

Tags get re-pushed, so the digests in matrix.toml are re-checked wherever a registry is reachable
(never on a machine without one: there this command says so in one line). It only reports;
updating a pin is a reviewed edit of matrix.toml.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .errors import UserError
from .matrix import Matrix

ACCEPT = ", ".join(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
                    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"])


def split(ref: str) -> tuple[str, str, str]:
    """'nvidia/cuda:13.0.3-base-ubuntu24.04@sha256:...' -> ('nvidia/cuda', '13.0.3-base-ubuntu24.04', 'sha256:...')."""
    name, _, digest = ref.partition("@")
    repository, _, tag = name.rpartition(":")
    if "/" not in repository:
        repository = f"library/{repository}"
    return repository, tag, digest


def current_digest(repository: str, tag: str, timeout: float = 20) -> str:
    try:
        token_url = f"https://auth.docker.io/token?service=registry.docker.io&scope=repository:{repository}:pull"
        with urllib.request.urlopen(token_url, timeout=timeout) as response:
            token = json.load(response)["token"]
        request = urllib.request.Request(f"https://registry-1.docker.io/v2/{repository}/manifests/{tag}", method="HEAD",
                                         headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.headers["Docker-Content-Digest"]
    except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot reach Docker Hub to resolve {repository}:{tag} ({getattr(exc, 'reason', exc)})") from None


def main(matrix: Matrix, emit=print) -> int:
    refs = sorted({ref for t in matrix.targets.values() for ref in (t.base.build, t.base.runtime) if ref})
    if not refs:
        emit("resolve-digests: no target names an upstream base (every base is bootstrapped by build.py base)")
        return 0
    changed = 0
    for ref in refs:
        repository, tag, pinned = split(ref)
        now = current_digest(repository, tag)
        same = now == pinned
        changed += not same
        emit(f"{'same   ' if same else 'CHANGED'} {repository}:{tag} pinned {pinned[:19]} registry {now[:19]}")
    return 1 if changed else 0
