"""The pinned vLLM sdist: downloaded once into the cache, sha256 verified every time it is used."""

from __future__ import annotations

import tarfile
from pathlib import Path

from . import download
from .errors import UserError
from .matrix import Target


def sdist_path(target: Target) -> Path:
    return download.CACHE / "sdists" / target.vllm.sdist_sha256 / target.vllm.sdist_filename


def fetch_sdist(target: Target, progress=print) -> Path:
    """The target's sdist from the cache or from its pinned URL, its sha256 checked either way."""
    if not target.vllm.sdist_url:
        raise UserError(f"target {target.name} installs vLLM from a wheel, not an sdist")
    path = sdist_path(target)
    if not path.is_file():
        progress(f"downloading {target.vllm.sdist_url}")
    return download.verified(target.vllm.sdist_url, target.vllm.sdist_sha256, path, recheck=True)


def extract(archive: Path, dest: Path, members_under: str | None = None) -> Path:
    """Unpack the sdist (or only the files under `members_under`) into dest; returns the source root."""
    with tarfile.open(archive) as tar:
        root = tar.getnames()[0].split("/", 1)[0]
        selected = [m for m in tar.getmembers() if members_under is None or m.name.startswith(f"{root}/{members_under}")]
        tar.extractall(dest, members=selected, filter="data")
    return dest / root
