"""The one downloader: a URL into a content-addressed cache, its sha256 checked before it is kept.

Files are cached under ~/.cache/dsv4-flash ($DSV4_CACHE) by sha256, so a cached file is the pinned
file by construction; `recheck=True` hashes it again anyway (the vLLM sdist is re-verified on use).
A mismatch is an error and the bytes are never kept."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from .checksums import CHUNK, sha256_file
from .errors import UserError

CACHE = Path(os.environ.get("DSV4_CACHE", Path.home() / ".cache" / "dsv4-flash"))


def verified(url: str, sha256: str, path: Path, *, recheck: bool = False, timeout: float = 300) -> Path:
    """`path`, downloaded from `url` unless already there; its sha256 must be `sha256`."""
    if path.is_file():
        if not recheck or sha256_file(path) == sha256:
            return path
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    # One partial file per process: two runs side by side (./dev test's tracks) may fetch the same file, and the
    # rename below is atomic, so each sees either nothing or a complete, verified file.
    partial = path.with_name(f"{path.name}.part-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, urllib.error.HTTPError):
            why = f"HTTP {exc.code} {exc.reason}"
        elif isinstance(exc, http.client.HTTPException):  # not an HTTP answer: a bad status line, a cut header
            why = f"the answer is not HTTP ({type(exc).__name__}: {' '.join(str(exc).split())[:80]})"
        else:
            why = getattr(exc, "reason", exc)
        raise UserError(f"download of {url} failed: {why}") from None
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"checksum mismatch for {path.name}: expected sha256 {sha256}, got {digest.hexdigest()}")
    partial.rename(path)
    return path
