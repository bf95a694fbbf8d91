"""Hash-locked requirements -> verified files on the host -> a loopback package index for builds.

Containers started by `docker build` cannot be assumed to reach PyPI (on some machines TLS to it
is intercepted), so build.py downloads every file a lock names on the host, checks its sha256
against the lock, and serves exactly those files as a PEP 503 index on 127.0.0.1 while the build
runs (the build uses host networking). pip in the build verifies the hashes again.
"""

from __future__ import annotations

import errno
import html
import os
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from pypi_simple import (DistributionPackage, NoSuchProjectError, PyPISimple, UnsupportedContentTypeError,
                         UnsupportedRepoVersionError)

from . import download as downloads
from .errors import UserError

PYPI_SIMPLE = os.environ.get("DSV4_PYPI_SIMPLE_URL", "https://pypi.org/simple")
# The loopback index listens on this port plus the target's offset (default_port); $DSV4_WHEEL_SERVER_PORT
# replaces the result (checked by the CLI before a build).
DEFAULT_SERVER_PORT = 38071
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def default_port(target: str | None = None) -> int:
    """The loopback index's port for a target's build. The index URL is a build argument (in the layer cache's
    keys and the image's history), so each target keeps one port for good; a port per target lets builds of
    different targets run side by side (./dev test builds the cpu and sm120 images at once) instead of one
    waiting the other's whole build out for the port. Two targets that land on one port only wait."""
    return DEFAULT_SERVER_PORT + (zlib.crc32(target.encode()) % 1000 if target else 0)


@dataclass(frozen=True)
class Requirement:
    name: str
    version: str
    hashes: frozenset[str]


@dataclass(frozen=True)
class LockedFile:
    project: str
    filename: str
    url: str
    sha256: str

    @property
    def path(self) -> Path:
        return downloads.CACHE / "files" / self.sha256[:2] / self.sha256 / self.filename


def parse_lock(text: str, source: str) -> list[Requirement]:
    """name==version lines with --hash=sha256:... continuations (uv/pip-compile output)."""
    reqs = []
    for n, line in enumerate(re.sub(r"\\\n", " ", text).splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)\s*(?:;[^-]*)?((?:\s*--hash=sha256:[0-9a-f]{64})+)\s*$", line)
        if not m:
            raise UserError(f"{source}: entry {n} is not a hash-locked `name==version --hash=sha256:...` line: {line[:80]!r}")
        hashes = frozenset(re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
        reqs.append(Requirement(canonicalize_name(m.group(1)), m.group(2), hashes))
    return reqs


def supported_tags(python: str, platform: str) -> list[Tag]:
    """Wheel tags a CPython `python` on glibc `platform` (manylinux_2_NN_x86_64) accepts, best first."""
    major, minor = (int(x) for x in python.split("."))
    glibc = int(platform.split("_")[2])
    platforms = []
    for m in range(glibc, 4, -1):
        platforms.append(f"manylinux_2_{m}_x86_64")
        if m in LEGACY_MANYLINUX:
            platforms.append(f"{LEGACY_MANYLINUX[m]}_x86_64")
    return [*cpython_tags((major, minor), platforms=platforms),
            *compatible_tags((major, minor), interpreter=f"cp{major}{minor}", platforms=platforms)]


def _simple_index(project: str) -> list[DistributionPackage]:
    """The project's files from the simple index, read by pypi-simple (PEP 691 JSON or PEP 503 HTML)."""
    try:
        with PyPISimple(endpoint=f"{PYPI_SIMPLE.rstrip('/')}/") as index:
            return index.get_project_page(project, timeout=60).packages
    except (requests.RequestException, NoSuchProjectError, UnsupportedContentTypeError, UnsupportedRepoVersionError,
            ValueError) as exc:
        raise UserError(f"cannot read the package index for {project} at {PYPI_SIMPLE}: {exc}") from None


def select_file(req: Requirement, files: list[DistributionPackage], tags: list[Tag]) -> LockedFile:
    """The best-ranked file of this version whose sha256 the lock allows (a wheel, else the sdist)."""
    rank = {tag: i for i, tag in enumerate(tags)}
    best: tuple[int, DistributionPackage] | None = None
    for f in files:
        if f.digests.get("sha256") not in req.hashes:
            continue
        if f.filename.endswith(".whl"):
            _, version, _, file_tags = parse_wheel_filename(f.filename)
            score = min((rank[t] for t in file_tags if t in rank), default=None)
        elif f.filename.endswith((".tar.gz", ".zip")):
            _, version = parse_sdist_filename(f.filename)
            score = len(rank) + 1
        else:
            continue
        if score is not None and str(version) == str(req.version) and (best is None or score < best[0]):
            best = (score, f)
    if best is None:
        raise UserError(f"no file of {req.name}=={req.version} matches the lock's hashes for this platform")
    f = best[1]
    return LockedFile(req.name, f.filename, f.url, f.digests["sha256"])


def download(item: LockedFile) -> Path:
    """Download once into the content-addressed cache; a sha256 mismatch is an error, never kept."""
    return downloads.verified(item.url, item.sha256, item.path, timeout=120)


def resolve_lock(lock_path: Path, python: str, platform: str) -> list[LockedFile]:
    reqs = parse_lock(lock_path.read_text(), lock_path.name)
    tags = supported_tags(python, platform)
    with ThreadPoolExecutor(8) as pool:
        indexes = list(pool.map(lambda r: _simple_index(r.name), reqs))
    return [select_file(req, files, tags) for req, files in zip(reqs, indexes)]


def fetch(files: list[LockedFile], progress=print) -> int:
    """Download what is missing; returns the total size in bytes."""
    missing = [f for f in files if not f.path.is_file()]
    if missing:
        progress(f"downloading {len(missing)} of {len(files)} locked files into {downloads.CACHE / 'files'}")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(download, missing))
    return sum(f.path.stat().st_size for f in files)


class LoopbackIndex:
    """A PEP 503 simple index of exactly the given files, on 127.0.0.1, for the build's duration.

    /simple/<project>/ lists a project's files with #sha256= fragments; /files/<name> serves them.
    Extra files (the vLLM sdist, the compile's external archives) are served under /files/<their key> too.
    """

    def __init__(self, files: list[LockedFile], extra: dict[str, Path] | None = None, port: int | None = None,
                 wait_s: float = 0, emit=None, target: str | None = None):
        """`wait_s`: how long to wait for the port when another build's index holds it (builder.py waits on
        its target's default port, see default_port). $DSV4_WHEEL_SERVER_PORT replaces the default."""
        self.wait_s, self.emit = wait_s, emit
        self.by_project: dict[str, list[LockedFile]] = {}
        self.paths: dict[str, Path] = dict(extra or {})
        for f in files:
            self.by_project.setdefault(f.project, []).append(f)
            self.paths[f.filename] = f.path
        self.port = port or int(os.environ.get("DSV4_WHEEL_SERVER_PORT") or default_port(target))
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LoopbackIndex":
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the build output is the log
                pass

            def do_GET(self):
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if parts[:1] == ["simple"] and len(parts) == 2:
                    files = index.by_project.get(canonicalize_name(parts[1]), [])
                    if not files:
                        return self.send_error(404)
                    links = "".join(f'<a href="/files/{html.escape(f.filename)}#sha256={f.sha256}">{html.escape(f.filename)}</a>\n'
                                    for f in files)
                    return self._send(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html")
                name = "/".join(parts[1:])  # extra files may sit below /files/ (github/<repo>/archive/...)
                if parts[:1] == ["files"] and name in index.paths:
                    path = index.paths[name]
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(path.stat().st_size))
                    self.end_headers()
                    with open(path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            self.wfile.write(chunk)
                    return None
                return self.send_error(404)

            def _send(self, body: bytes, ctype: str):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise UserError(f"cannot serve the build's package index on 127.0.0.1:{self.port} ({exc.strerror}); "
                                    "set DSV4_WHEEL_SERVER_PORT to a free port") from None
                if self.emit:
                    self.emit(f"packages: 127.0.0.1:{self.port} is taken, most likely by another build's index; "
                              "waiting for it (one build of a target at a time)")
                    self.emit = None  # said once
                time.sleep(5)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
