"""Base images without a registry: use the pinned digest when it can be had, else bootstrap.

`ensure_base` returns the reference a build should use for the target's runtime base:
1. the pinned `name@sha256:` reference, if the daemon already has it or can pull it;
2. otherwise (cpu target only) a Debian image made here from Debian's archive with mmdebstrap,
   loaded as a docker-archive whose config is fixed by the bootstrap's own SOURCE_DATE_EPOCH
   (matrix.toml), so the same archive state gives the same image ID. It is tagged
   dsv4-flash-base:<suite>-<variant>.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from docker.errors import APIError, ImageNotFound

from . import oci_archive
from .checksums import sha256_file
from .docker_client import said
from .errors import UserError
from .matrix import Bootstrap, Target
from .provenance import rfc3339


def base_epoch(target: Target) -> int:
    """Files dated no later than this came with the base (see reproducible.stamp); 0 when unknown."""
    return target.base.bootstrap.source_date_epoch if target.base.bootstrap else 0


def local_tag(target: Target) -> str:
    boot = target.base.bootstrap
    return f"dsv4-flash-base:{boot.suite}-{boot.variant}"


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
        emit(f"base: cannot pull {ref} ({said(exc)[:160]})")
        return False


def ensure_base(client, target: Target, emit, force_bootstrap: bool = False) -> str:
    ref = target.base.runtime
    if not force_bootstrap and (_has(client, ref) or _try_pull(client, ref, emit)):
        return ref
    if target.base.bootstrap is None:
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
    boot = target.base.bootstrap
    if shutil.which("mmdebstrap") is None:
        raise UserError("mmdebstrap is not installed (apt-get install mmdebstrap); it makes the Debian base image "
                        "when no registry is reachable")
    with tempfile.TemporaryDirectory(prefix="dsv4-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        cmd = ["mmdebstrap", f"--variant={boot.variant}", "--quiet", "--format=tar",
               *([f"--include={','.join(boot.include)}"] if boot.include else []), boot.suite, str(rootfs), boot.mirror]
        emit(f"base: {' '.join(cmd)} (SOURCE_DATE_EPOCH={boot.source_date_epoch})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(boot.source_date_epoch)}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"mmdebstrap failed: {last}")
        layer = sha256_file(rootfs)
        config = oci_archive.canonical_json(base_config(layer, boot, target.base.runtime))
        try:
            client.images.load(oci_archive.write_stream(config, [tag], [(layer, rootfs)]))
        except APIError as exc:
            raise UserError(f"docker load of the bootstrapped base failed: {said(exc)}") from None
    image = client.images.get(tag)
    emit(f"base: loaded {tag} ({image.id[:19]}, rootfs sha256 {layer[:12]})")
    return tag


def base_config(layer: str, boot: Bootstrap, stands_for: str) -> dict:
    """The image config of the bootstrapped base: fixed by its inputs, so its ID is too."""
    created = rfc3339(boot.source_date_epoch)
    recipe = f"mmdebstrap --variant={boot.variant} --include={','.join(boot.include)} {boot.suite} {boot.mirror}"
    return {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"],
                   "Labels": {"io.dsv4-flash.base.rootfs-sha256": layer, "io.dsv4-flash.base.recipe": recipe,
                              "io.dsv4-flash.base.stands-for": stands_for}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]},
        "history": [{"created": created, "created_by": f"mmdebstrap {boot.suite} ({boot.variant})"}],
    }
