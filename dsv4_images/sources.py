"""The pinned vLLM sdist: downloaded once into the cache, sha256 verified every time it is used."""

from __future__ import annotations

import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import UserError
from .matrix import Target
from .wheelhouse import CACHE, sha256_file


def sdist_path(target: Target) -> Path:
    vllm = target["vllm"]
    return CACHE / "sdists" / vllm["sdist_sha256"] / vllm["sdist_url"].rsplit("/", 1)[1]


def fetch_sdist(target: Target, progress=print) -> Path:
    """The target's sdist from the cache (verified) or from its pinned URL (verified, then kept)."""
    vllm = target["vllm"]
    if vllm["source"] != "sdist":
        raise UserError(f"target {target.name} installs vLLM from a wheel, not an sdist")
    path = sdist_path(target)
    if path.is_file():
        actual = sha256_file(path)
        if actual == vllm["sdist_sha256"]:
            return path
        path.unlink()
        progress(f"cached {path.name} had sha256 {actual}; downloading it again")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    progress(f"downloading {vllm['sdist_url']}")
    try:
        with urllib.request.urlopen(vllm["sdist_url"], timeout=300) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"download of {vllm['sdist_url']} failed: {exc}") from None
    actual = sha256_file(partial)
    if actual != vllm["sdist_sha256"]:
        partial.unlink()
        raise UserError(f"checksum mismatch for {path.name}: matrix.toml pins sha256 {vllm['sdist_sha256']}, "
                        f"the download has {actual}")
    partial.rename(path)
    return path


def extract(archive: Path, dest: Path, members_under: str | None = None) -> Path:
    """Unpack the sdist (or only the files under `members_under`) into dest; returns the source root."""
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        root = names[0].split("/", 1)[0]
        selected = [m for m in tar.getmembers()
                    if members_under is None or m.name.startswith(f"{root}/{members_under}")]
        tar.extractall(dest, members=selected, filter="data")
    return dest / root
