"""Build with BuildKit through the Docker Python SDK, streaming `--progress=plain`-style output.

docker-py's `build()` has no BuildKit switch, so this posts to the same Engine endpoint with
`version=2` (BuildKit) and decodes the `moby.buildkit.trace` messages, which are base64
protobuf `StatusResponse`s, with a small wire-format reader (vertexes, statuses, logs).
"""

from __future__ import annotations

import base64
import io
import re
import tarfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from docker.errors import APIError

from .errors import UserError


# ---- protobuf wire format -------------------------------------------------------------------

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _timestamp(buf: bytes) -> float:
    parts = dict(fields(buf))
    return parts.get(1, 0) + parts.get(2, 0) / 1e9


@dataclass
class Vertex:
    number: int
    name: str = ""
    started: float | None = None
    completed: float | None = None
    cached: bool = False
    error: str = ""
    announced: bool = False
    logs: deque = field(default_factory=lambda: deque(maxlen=30))


STAGE_STEP = re.compile(r"^\[([A-Za-z0-9_.-]+) \d+/\d+\] ")


class Progress:
    """Turns trace messages into plain progress lines (`#3 [runtime-deps 2/5] RUN ...`)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.vertexes: dict[str, Vertex] = {}

    def _vertex(self, digest: str) -> Vertex:
        if digest not in self.vertexes:
            self.vertexes[digest] = Vertex(number=len(self.vertexes) + 1)
        return self.vertexes[digest]

    def feed(self, status: bytes) -> None:
        for number, value in fields(status):
            if number == 1:
                self._on_vertex(dict(fields(value)))
            elif number == 3:
                self._on_log(dict(fields(value)))

    def _on_vertex(self, msg: dict) -> None:
        v = self._vertex(msg.get(1, b"").decode())
        v.name = msg.get(3, b"").decode() or v.name
        if msg.get(4):
            v.cached = True
        if 5 in msg and v.started is None:
            v.started = _timestamp(msg[5])
        if not v.announced and (v.started is not None or v.cached):
            v.announced = True
            self.emit(f"#{v.number} {v.name}")
        if 7 in msg:
            v.error = msg[7].decode(errors="replace")
            self.emit(f"#{v.number} ERROR: {v.error}")
        elif 6 in msg and v.completed is None:
            v.completed = _timestamp(msg[6])
            if v.cached:
                self.emit(f"#{v.number} CACHED")
            elif v.started is not None:
                self.emit(f"#{v.number} DONE {v.completed - v.started:.1f}s")

    def _on_log(self, msg: dict) -> None:
        v = self._vertex(msg.get(1, b"").decode())
        for line in msg.get(4, b"").decode(errors="replace").splitlines():
            if line.strip():
                v.logs.append(line)
                self.emit(f"#{v.number} {line}")

    def stage_seconds(self) -> dict[str, dict]:
        """Per Dockerfile stage: wall seconds from its first step's start to its last step's end, and its
        steps (cached ones too). A step outside the stages ("exporting to image", "[internal] ...") counts
        under its own name when it took a second or more: the export of a 10 GB image is minutes."""
        out: dict[str, dict] = {}
        for v in self.vertexes.values():
            m = STAGE_STEP.match(v.name)
            timed = v.started is not None and v.completed is not None
            if m:
                key = m.group(1)
            elif timed and v.completed - v.started >= 1:
                key = v.name
            else:
                continue
            s = out.setdefault(key, {"steps": 0, "cached": 0, "start": None, "end": None})
            s["steps"] += 1
            s["cached"] += v.cached
            if timed and not v.cached:
                s["start"] = v.started if s["start"] is None else min(s["start"], v.started)
                s["end"] = v.completed if s["end"] is None else max(s["end"], v.completed)
        return {name: {"seconds": round(s["end"] - s["start"], 1) if s["start"] is not None else 0.0,
                       "steps": s["steps"], "cached": s["cached"]} for name, s in out.items()}

    def failure_context(self) -> list[str]:
        """The failed step's name and its last log lines, for the error summary."""
        failed = [v for v in self.vertexes.values() if v.error]
        return [f"{v.name}: {line}" for v in failed for line in list(v.logs)[-5:]]


# ---- context and build ----------------------------------------------------------------------

def context_tar(root: Path, files: list[str], mtime: int) -> bytes:
    """A deterministic build context: sorted entries, fixed owner, mode and mtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in sorted(set(files)):
            path = root / rel
            if not path.is_file():
                raise UserError(f"build context: {rel} is missing")
            info = tarfile.TarInfo(rel)
            data = path.read_bytes()
            info.size, info.mtime = len(data), mtime
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class BuildResult:
    image_id: str
    steps: int
    cached_steps: int
    stages: dict[str, dict] = field(default_factory=dict)  # Progress.stage_seconds()
    # Filled in by builder.execute after the build: the SBOM written, and each pushed reference's manifest digest.
    sbom: Path | None = None
    pushed: dict[str, str] = field(default_factory=dict)
    normalized: object | None = None  # the reproducible rewrite (reproducible.NormalizedImage), per-file index if asked


def build(client, context: bytes, dockerfile: str, tags: list[str], build_args: dict[str, str],
          stage: str | None, network_host: bool, no_cache: bool, emit: Callable[[str], None]) -> BuildResult:
    """Run one BuildKit build on the daemon behind `client` (a docker.DockerClient)."""
    import json

    params = {"t": tags, "dockerfile": dockerfile, "buildargs": json.dumps(build_args), "version": "2",
              "rm": "1", "forcerm": "1", "pull": "0", "nocache": "1" if no_cache else "0",
              "networkmode": "host" if network_host else "default"}
    if stage:
        params["target"] = stage
    progress = Progress(emit)
    api = client.api
    try:
        response = api._post(api._url("/build"), params=params, data=context,
                             headers={"Content-Type": "application/x-tar"}, stream=True, timeout=None)
        api._raise_for_status(response)
        image_id, error = None, None
        for chunk in api._stream_helper(response, decode=True):
            if chunk.get("id") == "moby.buildkit.trace" and "aux" in chunk:
                progress.feed(base64.b64decode(chunk["aux"]))
            elif chunk.get("id") == "moby.image.id":
                image_id = chunk["aux"]["ID"]
            elif "error" in chunk:
                error = chunk["error"]
            elif chunk.get("stream", "").strip():
                emit(chunk["stream"].rstrip())
    except APIError as exc:
        raise UserError(f"the Docker daemon refused the build: {exc.explanation or exc}") from None
    if error or not image_id:
        context_lines = progress.failure_context()
        for line in context_lines:
            emit(f"  | {line}")
        raise UserError(f"build failed: {' '.join((error or 'no image produced').split())}")
    steps = len(progress.vertexes)
    cached = sum(1 for v in progress.vertexes.values() if v.cached)
    stages = progress.stage_seconds()
    for name, s in stages.items():
        emit(f"stage {name}: {s['seconds']:.1f} s ({s['steps']} steps, {s['cached']} cached)")
    return BuildResult(image_id=image_id, steps=steps, cached_steps=cached, stages=stages)
