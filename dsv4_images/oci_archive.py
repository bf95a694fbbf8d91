"""Docker-archive streams (`docker save` / `docker load` format), read and written without a copy on disk.

Engine 20.10 has no API to import an image with a chosen config, so the bootstrapped base and the
reproducible rewrite both hand the daemon a docker-archive: a tar holding the config JSON, a
manifest.json and one uncompressed `<hex>/layer.tar` per layer. The image ID is the sha256 of the
config bytes, so it depends on the config alone, never on this archive's own tar headers."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Iterable, Iterator

from .checksums import CHUNK


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of byte chunks (the Engine's `docker save` stream)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def open_stream(chunks: Iterable[bytes]) -> tarfile.TarFile:
    """The archive as a forward-only tar stream (members must be read in order)."""
    return tarfile.open(fileobj=io.BufferedReader(_ChunkReader(chunks), CHUNK), mode="r|")


class HashingWriter:
    """A write-only sink that hashes (and optionally keeps) what passes through it."""

    def __init__(self, sink=None):
        self.sha = hashlib.sha256()
        self.sink = sink
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.PAX_FORMAT)


def write_stream(config: bytes, tags: list[str], layers: list[tuple[str, Path]], consume: bool = False,
                 present: int = 0) -> Iterator[bytes]:
    """The docker-archive for `docker load`, made on the fly from (sha256 hex, uncompressed layer file) pairs.

    The daemon unpacks the archive into its own temporary directory, so no copy is written here; with
    `consume`, each layer file is deleted once sent (a layer that repeats is sent once). The first `present`
    layers are listed but not sent: the daemon reads a layer's file only when it lacks the chain of layers up
    to it (moby image/tarexport/load.go), and the caller has seen that chain in an image the daemon holds."""
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags,
                            "Layers": [f"{hexdigest}/layer.tar" for hexdigest, _ in layers]}]).encode()
    for name, data in ((config_name, config), ("manifest.json", manifest)):
        yield _header(name, len(data)) + data + b"\0" * (-len(data) % 512)
    needed = {hexdigest for hexdigest, _ in layers[present:]}
    for hexdigest, path in dict(layers).items():
        if hexdigest not in needed:
            continue
        size = path.stat().st_size
        yield _header(f"{hexdigest}/layer.tar", size)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
        if consume:
            path.unlink()
        yield b"\0" * (-size % 512)
    yield b"\0" * 1024
