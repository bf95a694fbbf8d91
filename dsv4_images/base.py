"""Base images without a registry: use the pinned digest when it can be had, else bootstrap.

`ensure_base` returns the reference a build should use for the target's runtime base:
1. the pinned `name@sha256:` reference, if the daemon already has it or can pull it;
2. otherwise (cpu target only) a Debian image made here from Debian's archive with mmdebstrap,
   loaded as a docker-archive whose config is fixed by SOURCE_DATE_EPOCH, so the same archive
   state gives the same image ID. It is tagged dsv4-flash-base:<suite>-<variant>.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from docker.errors import APIError, ImageNotFound

from .errors import UserError, daemon_said
from .matrix import Target

# The base's own timestamp: fixed, so that rebuilding the base does not depend on the commit.
BASE_SOURCE_DATE_EPOCH = 1767225600  # 2026-01-01T00:00:00Z


def local_tag(target: Target) -> str:
    boot = target["base"]["bootstrap"]
    return f"dsv4-flash-base:{boot['suite']}-{boot['variant']}"


def _has(client, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except ImageNotFound:
        return False


def _try_pull(client, ref: str, emit) -> bool:
    """Pull `name[:tag]@sha256:...` by its digest; False (with one line said) when it cannot."""
    name, digest = ref.split("@", 1)
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    try:
        for chunk in client.api.pull(repository, tag=digest, stream=True, decode=True):
            if "error" in chunk:
                raise APIError(chunk["error"])
        return True
    except APIError as exc:
        emit(f"base: cannot pull {ref} ({daemon_said(exc)[:160]})")
        return False


def ensure_base(client, target: Target, emit, force_bootstrap: bool = False) -> str:
    ref = target["base"]["runtime"]
    if not force_bootstrap and (_has(client, ref) or _try_pull(client, ref, emit)):
        return ref
    if "bootstrap" not in target["base"]:
        raise UserError(f"base image {ref} is not available and target {target.name} has no bootstrap recipe "
                        "(only the cpu target can be built without a registry)")
    tag = local_tag(target)
    if not force_bootstrap and _has(client, tag):
        emit(f"base: using the bootstrapped {tag}")
        return tag
    bootstrap(client, target, tag, emit)
    return tag


def bootstrap(client, target: Target, tag: str, emit) -> str:
    """mmdebstrap the suite into a tarball, wrap it as a one-layer docker-archive, docker load it."""
    boot = target["base"]["bootstrap"]
    if shutil.which("mmdebstrap") is None:
        raise UserError("mmdebstrap is not installed (apt-get install mmdebstrap); it makes the Debian base image "
                        "when no registry is reachable")
    with tempfile.TemporaryDirectory(prefix="dsv4-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        cmd = ["mmdebstrap", f"--variant={boot['variant']}", "--quiet", "--format=tar",
               *([f"--include={','.join(boot['include'])}"] if boot["include"] else []),
               boot["suite"], str(rootfs), boot["mirror"]]
        emit(f"base: {' '.join(cmd)} (SOURCE_DATE_EPOCH={BASE_SOURCE_DATE_EPOCH})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(BASE_SOURCE_DATE_EPOCH)}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"mmdebstrap failed: {last}")
        archive = docker_archive(rootfs, tag, boot, target["base"]["runtime"])
        with open(archive, "rb") as f:
            try:
                client.images.load(f)
            except APIError as exc:
                raise UserError(f"docker load of the bootstrapped base failed: {exc.explanation or exc}") from None
    image = client.images.get(tag)
    emit(f"base: loaded {tag} ({image.id[:19]}, rootfs sha256 {image.labels.get('io.dsv4-flash.base.rootfs-sha256', '?')[:12]})")
    return tag


def docker_archive(rootfs: Path, tag: str, boot: dict, stands_for: str) -> Path:
    """A `docker save`-format tarball around one uncompressed layer, with a fixed config."""
    digest = hashlib.sha256()
    with open(rootfs, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    layer_id = digest.hexdigest()
    created = datetime.fromtimestamp(BASE_SOURCE_DATE_EPOCH, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"],
                   "Labels": {"io.dsv4-flash.base.rootfs-sha256": layer_id,
                              "io.dsv4-flash.base.recipe": f"mmdebstrap --variant={boot['variant']} "
                                                           f"--include={','.join(boot['include'])} {boot['suite']} {boot['mirror']}",
                              "io.dsv4-flash.base.stands-for": stands_for}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]},
        "history": [{"created": created, "created_by": f"mmdebstrap {boot['suite']} ({boot['variant']})"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": [f"{layer_id}/layer.tar"]}]).encode()
    out = rootfs.with_name("base-image.tar")
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((config_name, config_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), BASE_SOURCE_DATE_EPOCH
            tar.addfile(info, io.BytesIO(data))
        info = tar.gettarinfo(str(rootfs), arcname=f"{layer_id}/layer.tar")
        info.mtime, info.uid, info.gid, info.uname, info.gname = BASE_SOURCE_DATE_EPOCH, 0, 0, "", ""
        with open(rootfs, "rb") as f:
            tar.addfile(info, f)
    return out
