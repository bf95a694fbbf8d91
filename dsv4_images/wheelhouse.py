"""Hash-locked requirements -> verified files on the host -> a loopback package index for builds.

Containers started by `docker build` cannot be assumed to reach PyPI (on some machines TLS to it
is intercepted), so build.py downloads every file a lock names on the host, checks its sha256
against the lock, and serves exactly those files as a PEP 503 index on 127.0.0.1 while the build
runs (the build uses host networking). pip in the build verifies the hashes again.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from .errors import UserError

PYPI_SIMPLE = os.environ.get("DSV4_PYPI_SIMPLE_URL", "https://pypi.org/simple")
CACHE = Path(os.environ.get("DSV4_CACHE", Path.home() / ".cache" / "dsv4-flash"))
DEFAULT_SERVER_PORT = int(os.environ.get("DSV4_WHEEL_SERVER_PORT", "38071"))
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


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
        return CACHE / "files" / self.sha256[:2] / self.sha256 / self.filename


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


class _LinkParser(HTMLParser):
    """The file links of a PEP 503 (HTML) project page."""

    def __init__(self, base_url: str):
        super().__init__()
        self.base_url, self.files, self._href = base_url, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data):
        if self._href is not None:
            url, _, fragment = urllib.parse.urljoin(self.base_url, self._href).partition("#")
            hashes = dict([fragment.split("=", 1)]) if "=" in fragment else {}
            self.files.append({"filename": data.strip(), "url": url, "hashes": hashes})
            self._href = None


def _simple_index(project: str) -> list[dict]:
    """The project's files from the simple index: PEP 691 JSON when the index offers it, else PEP 503 HTML."""
    url = f"{PYPI_SIMPLE}/{project}/"
    request = urllib.request.Request(url, headers={
        "Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body, content_type = response.read(), response.headers.get_content_type()
            base_url = response.geturl()
        if content_type.endswith("json"):
            return json.loads(body)["files"]
        parser = _LinkParser(base_url)
        parser.feed(body.decode("utf-8"))
        if not parser.files:
            raise ValueError(f"a {content_type} page with no file links")
        return parser.files
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise UserError(f"cannot read the package index for {project} at {PYPI_SIMPLE}: {exc}") from None


def select_file(req: Requirement, files: list[dict], tags: list[Tag]) -> LockedFile:
    """The best-ranked file of this version whose sha256 the lock allows (a wheel, else the sdist)."""
    rank = {tag: i for i, tag in enumerate(tags)}
    best: tuple[int, dict] | None = None
    for f in files:
        digest = f.get("hashes", {}).get("sha256")
        if digest not in req.hashes:
            continue
        name = f["filename"]
        if name.endswith(".whl"):
            _, version, _, file_tags = parse_wheel_filename(name)
            score = min((rank[t] for t in file_tags if t in rank), default=None)
        elif name.endswith((".tar.gz", ".zip")):
            _, version = parse_sdist_filename(name)
            score = len(rank) + 1
        else:
            continue
        if score is not None and str(version) == str(req.version) and (best is None or score < best[0]):
            best = (score, f)
    if best is None:
        raise UserError(f"no file of {req.name}=={req.version} matches the lock's hashes for this platform")
    f = best[1]
    return LockedFile(req.name, f["filename"], f["url"], f["hashes"]["sha256"])


def download(item: LockedFile) -> Path:
    """Download once into the content-addressed cache; a sha256 mismatch is an error, never kept."""
    if item.path.is_file():
        return item.path
    item.path.parent.mkdir(parents=True, exist_ok=True)
    partial = item.path.with_name(item.path.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(item.url, timeout=120) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"download of {item.filename} failed: {exc}") from None
    if digest.hexdigest() != item.sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"checksum mismatch for {item.filename}: expected sha256 {item.sha256}, got {digest.hexdigest()}")
    partial.rename(item.path)
    return item.path


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
        progress(f"downloading {len(missing)} of {len(files)} locked files into {CACHE / 'files'}")
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(download, missing))
    return sum(f.path.stat().st_size for f in files)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class LoopbackIndex:
    """A PEP 503 simple index of exactly the given files, on 127.0.0.1, for the build's duration.

    /simple/<project>/ lists a project's files with #sha256= fragments; /files/<name> serves them.
    Extra files (e.g. the vLLM sdist) are served under /files/ too.
    """

    def __init__(self, files: list[LockedFile], extra: dict[str, Path] | None = None, port: int = DEFAULT_SERVER_PORT):
        self.by_project: dict[str, list[LockedFile]] = {}
        self.paths: dict[str, Path] = dict(extra or {})
        for f in files:
            self.by_project.setdefault(f.project, []).append(f)
            self.paths[f.filename] = f.path
        self.port = port
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
                if parts[:1] == ["files"] and len(parts) == 2 and parts[1] in index.paths:
                    path = index.paths[parts[1]]
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

        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        except OSError as exc:
            raise UserError(f"cannot serve the build's package index on 127.0.0.1:{self.port} ({exc.strerror}); "
                            "set DSV4_WHEEL_SERVER_PORT to a free port") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
