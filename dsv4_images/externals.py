"""The compile's external sources on the host: each pinned GitHub archive downloaded once into the cache and
accepted only when its uncompressed tar has the pinned sha256 (what the vllm-externals stage checks again).

build.py serves the verified archives to the build on its loopback index, so the build never needs GitHub.
GitHub's tar has been stable; its gzip layer changed once (January 2023), which is why the pin is the
tar's sha256 and not the .tar.gz's.
"""

from __future__ import annotations

import gzip
import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from . import download
from .checksums import CHUNK
from .errors import UserError
from .matrix import External, Target

GITHUB = "https://github.com"
MIRROR_PREFIX = "github"  # archives are served at <index>/files/github/<repo>/archive/<commit>.tar.gz


def tar_sha256(archive: Path) -> str:
    """sha256 of the tar inside a .tar.gz (what a pin's tar_sha256 is)."""
    digest = hashlib.sha256()
    with gzip.open(archive, "rb") as tar:
        while chunk := tar.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cached_path(pin: External) -> Path:
    return download.CACHE / "externals" / pin.tar_sha256 / f"{pin.repo.replace('/', '-')}-{pin.commit}.tar.gz"


def fetch_pin(pin: External, base: str = GITHUB, progress=print) -> Path:
    """The pin's archive from the cache, or downloaded from `base` and verified; never kept when it differs."""
    if pin.missing:
        raise UserError(f"external {pin.name} is not pinned ({', '.join(pin.missing)} missing): "
                        "run `python build.py resolve-externals` where github.com is reachable")
    path = cached_path(pin)
    if path.is_file() and tar_sha256(path) == pin.tar_sha256:
        return path
    url = f"{base}/{pin.archive}"
    progress(f"downloading {url}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=300) as response, open(partial, "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
        got = tar_sha256(partial)
    except (urllib.error.URLError, OSError, EOFError) as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"download of {url} failed: {getattr(exc, 'reason', exc)}") from None
    if got != pin.tar_sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"checksum mismatch for {pin.name}: {url} holds a tar with sha256 {got}, "
                        f"matrix.toml pins {pin.tar_sha256}")
    partial.rename(path)
    return path


def fetch_all(target: Target, base: str = GITHUB, progress=print) -> dict[str, Path]:
    """Every pin of the target, verified: the loopback index's extra files (name -> path)."""
    refusal = target.unresolved_externals()
    if refusal:
        raise UserError(refusal)
    return {f"{MIRROR_PREFIX}/{pin.archive}": fetch_pin(pin, base, progress) for pin in target.externals}
