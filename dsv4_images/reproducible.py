"""Bit-for-bit reproducible images from a BuildKit too old to rewrite timestamps itself.

BuildKit >= 0.13 honours SOURCE_DATE_EPOCH with the image exporter option rewrite-timestamp=true
(the CI workflow uses that). The BuildKit inside Docker Engine 20.10 predates it, so build.py does
the same after the build: it streams the image out (`docker save`), sets the mtime of every file
the build made to SOURCE_DATE_EPOCH (see `stamp`), drops atime/ctime, sets the config's and history's creation
times to the epoch and removes the build container's id, then loads the result back under the
same tags. Layer order and file order are the daemon's (already sorted by path).

With index=True it also records every file's digest, so two builds can be compared file by file
(`build.py repro`). The rewrite is idempotent: normalizing an image pulled back from the registry
(already normalized) with the same epoch gives its own digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .base import BASE_SOURCE_DATE_EPOCH
from .errors import UserError

DROP_PAX = ("atime", "ctime", "mtime", "LIBARCHIVE.creationtime")


class _IterReader(io.RawIOBase):
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


class _HashingWriter:
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


@dataclass
class Layer:
    digest: str                                    # sha256 of the rewritten, uncompressed layer tar
    files: dict[str, tuple] = field(default_factory=dict)   # path -> (type, mode, uid, gid, size, sha256, link, mtime)


@dataclass
class NormalizedImage:
    config_digest: str
    layers: list[Layer]
    config: dict


class _HashingReader:
    """Reads through a member's data while hashing it (per-file digests for `repro`)."""

    def __init__(self, src):
        self.src, self.sha = src, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.sha.update(data)
        return data


def _entry(member: tarfile.TarInfo, data: _HashingReader | None) -> tuple:
    # Go's archive/tar keeps the file-type bits in the mode field; tarfile writes only the
    # permission bits, so compare those (the rewritten bytes carry nothing else).
    # The mtime is recorded too: after the rewrite it is the epoch, so two builds made with different
    # SOURCE_DATE_EPOCHs show every file as different instead of layers that differ in no file.
    return (member.type.decode(errors="replace"), member.mode & 0o7777, member.uid, member.gid,
            member.size, data.sha.hexdigest() if data else "", member.linkname, int(member.mtime))


def stamp(mtime: int, epoch: int) -> int:
    """The mtime a file gets in the normalized image.

    Files no newer than the base's own epoch (the base rootfs, package contents with their upstream
    dates) keep their time, clamped to the epoch. Anything newer was made by a build of this image,
    possibly an earlier one whose layer the cache reused, so it gets this build's epoch. Clamping alone
    (BuildKit's rewrite-timestamp rule) lets a cached layer keep the real time it was built at, before
    the new commit's epoch, and the image then differs from a rebuild without cache.
    """
    return epoch if mtime > BASE_SOURCE_DATE_EPOCH else min(mtime, epoch)


def _rewrite_layer(src, out: _HashingWriter, epoch: int, index: bool) -> dict[str, tuple]:
    files = {}
    with tarfile.open(fileobj=src, mode="r|") as tin, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tout:
        for member in tin:
            member.mtime = stamp(int(member.mtime), epoch)
            member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in DROP_PAX}
            data = _HashingReader(tin.extractfile(member)) if member.isreg() else None
            tout.addfile(member, data)
            if index:
                files[member.name] = _entry(member, data)
    return files


def _normalize_config(config: dict, diff_ids: list[str], epoch: int) -> dict:
    created = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = {k: v for k, v in config.items() if k not in ("container", "container_config", "docker_version")}
    out["created"] = created
    out["history"] = [{**h, "created": created} for h in config.get("history", [])]
    out["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return out


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def normalize(client, ref: str, epoch: int, load: bool = False, index: bool = False,
              progress: Callable[[str], None] = lambda _: None) -> NormalizedImage:
    """Rewrite `ref`'s layers and config for SOURCE_DATE_EPOCH; load the result under ref if asked."""
    try:
        stream = client.api.get_image(ref, chunk_size=1 << 20)
    except Exception as exc:  # docker.errors.*: the image is unknown or the daemon refused
        raise UserError(f"cannot export {ref}: {exc}") from None
    workdir = Path(tempfile.mkdtemp(prefix="dsv4-repro-"))
    layers_by_path: dict[str, Layer] = {}
    config_files: dict[str, dict] = {}
    manifest = None
    try:
        with tarfile.open(fileobj=io.BufferedReader(_IterReader(stream), 1 << 20), mode="r|") as outer:
            for member in outer:
                if member.name.endswith("layer.tar") and member.isreg():
                    progress(f"rewriting layer {member.name.split('/')[0][:12]} ({member.size / 1e6:.0f} MB)")
                    sink = open(workdir / f"{len(layers_by_path)}.tar", "wb") if load else None
                    writer = _HashingWriter(sink)
                    files = _rewrite_layer(outer.extractfile(member), writer, epoch, index)
                    if sink:
                        sink.close()
                        os.rename(sink.name, workdir / f"{writer.sha.hexdigest()}.tar")
                    layers_by_path[member.name] = Layer(f"sha256:{writer.sha.hexdigest()}", files)
                elif member.name == "manifest.json":
                    manifest = json.load(outer.extractfile(member))
                elif member.name.endswith(".json") and "/" not in member.name:
                    config_files[member.name] = json.load(outer.extractfile(member))
        if not manifest:
            raise UserError(f"docker save of {ref} produced no manifest")
        entry = manifest[0]
        layers = [layers_by_path[p] for p in entry["Layers"]]
        config = _normalize_config(config_files[entry["Config"]], [layer.digest for layer in layers], epoch)
        raw = _canonical(config)
        result = NormalizedImage(f"sha256:{hashlib.sha256(raw).hexdigest()}", layers, config)
        if load:
            _load(client, workdir, raw, result, entry.get("RepoTags") or [ref])
        return result
    finally:
        for p in workdir.glob("*"):
            p.unlink()
        workdir.rmdir()


def _archive(workdir: Path, raw_config: bytes, image: NormalizedImage, tags: list[str]) -> Iterator[bytes]:
    """The docker-archive for `docker load`, made on the fly.

    The daemon unpacks the archive into its own temporary directory, so a second copy of the
    layers on our side (an image.tar) would only add another image's worth of disk; each layer
    file is deleted once it has been sent."""
    config_name = image.config_digest.split(":", 1)[1] + ".json"
    hexes = [layer.digest.split(":", 1)[1] for layer in image.layers]
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags,
                            "Layers": [f"{h}/layer.tar" for h in hexes]}]).encode()

    def header(name: str, size: int) -> bytes:
        info = tarfile.TarInfo(name)
        info.size = size
        return info.tobuf(tarfile.PAX_FORMAT)

    for name, data in ((config_name, raw_config), ("manifest.json", manifest)):
        yield header(name, len(data)) + data + b"\0" * (-len(data) % 512)
    for h in dict.fromkeys(hexes):  # a layer that repeats is sent once
        path = workdir / f"{h}.tar"
        size = path.stat().st_size
        yield header(f"{h}/layer.tar", size)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        path.unlink()
        yield b"\0" * (-size % 512)
    yield b"\0" * 1024


def _load(client, workdir: Path, raw_config: bytes, image: NormalizedImage, tags: list[str]) -> None:
    client.images.load(_archive(workdir, raw_config, image, tags))
