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
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from docker.errors import APIError, DockerException, ImageLoadError, NotFound

from . import oci_archive
from .errors import UserError
from .oci_archive import HashingWriter
from .provenance import rfc3339

DROP_PAX = ("atime", "ctime", "mtime", "LIBARCHIVE.creationtime")


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


def stamp(mtime: int, epoch: int, base_epoch: int) -> int:
    """The mtime a file gets in the normalized image.

    Files no newer than the base's own epoch (the base rootfs, package contents with their upstream
    dates) keep their time, clamped to the epoch. Anything newer was made by a build of this image,
    possibly an earlier one whose layer the cache reused, so it gets this build's epoch. Clamping alone
    (BuildKit's rewrite-timestamp rule) lets a cached layer keep the real time it was built at, before
    the new commit's epoch, and the image then differs from a rebuild without cache.
    """
    return epoch if mtime > base_epoch else min(mtime, epoch)


def _rewrite_layer(src, out: HashingWriter, epoch: int, base_epoch: int, index: bool) -> dict[str, tuple]:
    files = {}
    with tarfile.open(fileobj=src, mode="r|") as tin, \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tout:
        for member in tin:
            member.mtime = stamp(int(member.mtime), epoch, base_epoch)
            member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in DROP_PAX}
            data = _HashingReader(tin.extractfile(member)) if member.isreg() else None
            tout.addfile(member, data)
            if index:
                files[member.name] = _entry(member, data)
    return files


def _normalize_config(config: dict, diff_ids: list[str], epoch: int) -> dict:
    created = rfc3339(epoch)
    out = {k: v for k, v in config.items() if k not in ("container", "container_config", "docker_version")}
    out["created"] = created
    out["history"] = [{**h, "created": created} for h in config.get("history", [])]
    out["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return out


def present_prefix(client, diff_ids: list[str]) -> int:
    """How many of `diff_ids`, from the first, the daemon already holds as one chain (in some image of its own).

    Only a saving: 0 whenever that cannot be told for sure. An image removed while the daemon's images are
    read is skipped; with the containerd image store a load needs every layer's blob, so nothing is held."""
    try:
        if "io.containerd.snapshotter" in str(client.info().get("DriverStatus")):
            return 0
        held = set()
        for summary in client.api.images(all=True):
            try:
                inspected = client.api.inspect_image(summary["Id"])
            except NotFound:  # removed meanwhile (./dev test's other run removes images as it goes)
                continue
            rootfs = inspected.get("RootFS") if isinstance(inspected, dict) else None
            layers = rootfs.get("Layers") if isinstance(rootfs, dict) else None
            if isinstance(layers, list):  # anything else (a proxy's odd answer) holds nothing
                held.update(tuple(layers[:n]) for n in range(1, len(layers) + 1))
    except DockerException:
        return 0
    n = 0
    while n < len(diff_ids) and tuple(diff_ids[:n + 1]) in held:
        n += 1
    return n


def _load(client, config: bytes, tags: list[str], layers: list[Layer], workdir: Path, progress) -> None:
    """Load the rewritten image, sending only the layers the daemon lacks: a rebuild that reproduces an image
    already here (`check`, a push after a build) loads its config and no layer data. Should an image holding
    those layers go away meanwhile, that load fails and is made again with every layer."""
    files = [(layer.digest.split(":", 1)[1], workdir / f"{layer.digest.split(':', 1)[1]}.tar") for layer in layers]
    present = present_prefix(client, [layer.digest for layer in layers])
    if present:
        progress(f"loading: {present} of {len(layers)} layers are already in the daemon; sending the other "
                 f"{len(layers) - present}")
        try:
            client.images.load(oci_archive.write_stream(config, tags, files, present=present))
            return
        except (APIError, ImageLoadError) as exc:
            said = " ".join(str(exc).split())
            if "no space left" in said:  # sending more cannot help
                raise UserError(f"cannot load the rewritten image: {said[:300]}") from None
            progress(f"loading without the held layers failed ({said[:160]}); sending all")
    client.images.load(oci_archive.write_stream(config, tags, files, consume=True))


def normalize(client, ref: str, epoch: int, base_epoch: int, load: bool = False, index: bool = False,
              progress: Callable[[str], None] = lambda _: None) -> NormalizedImage:
    """Rewrite `ref`'s layers and config for SOURCE_DATE_EPOCH; load the result under ref if asked.

    `base_epoch` is the base image's own fixed time (see `stamp`)."""
    try:
        stream = client.api.get_image(ref, chunk_size=1 << 20)
    except Exception as exc:  # docker.errors.*: the image is unknown or the daemon refused
        raise UserError(f"cannot export {ref}: {exc}") from None
    workdir = Path(tempfile.mkdtemp(prefix="dsv4-repro-"))
    layers_by_path: dict[str, Layer] = {}
    config_files: dict[str, dict] = {}
    manifest = None
    try:
        with oci_archive.open_stream(stream) as outer:
            for member in outer:
                if member.name.endswith("layer.tar") and member.isreg():
                    progress(f"rewriting layer {member.name.split('/')[0][:12]} ({member.size / 1e6:.0f} MB)")
                    sink = open(workdir / f"{len(layers_by_path)}.tar", "wb") if load else None
                    writer = HashingWriter(sink)
                    files = _rewrite_layer(outer.extractfile(member), writer, epoch, base_epoch, index)
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
        raw = oci_archive.canonical_json(config)
        result = NormalizedImage(f"sha256:{hashlib.sha256(raw).hexdigest()}", layers, config)
        if load:
            _load(client, raw, entry.get("RepoTags") or [ref], layers, workdir, progress)
        return result
    finally:
        for p in workdir.glob("*"):
            p.unlink()
        workdir.rmdir()
