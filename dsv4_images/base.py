"""Base images without a registry: the project makes its own.

`ensure_base` returns the reference a build should use for the target's runtime base:
1. for a target that names an upstream base by digest (none does today; the cpu target named
   debian:bookworm-slim until its packages were pinned too), that `name@sha256:` reference, if the
   daemon already has it or can pull it;
2. otherwise a Debian image made here from Debian's archive with mmdebstrap (a dated snapshot of the
   archive when it answers, the live mirror otherwise; apt checks the archive's signatures against
   Debian's keyring), loaded as a docker-archive whose config is fixed by the bootstrap's own
   SOURCE_DATE_EPOCH (matrix.toml), so the same packages give the same image ID. Its package list must
   equal the committed manifest (bases/*.manifest): a different version is refused in one line naming
   it, until `build.py base --update-manifest` moves the manifest forward deliberately. It is tagged
   dsv4-flash-base:<suite>-<variant>-<recipe hash>, so bases with other package lists never mix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from docker.errors import APIError, ImageNotFound

from . import REPO_ROOT, oci_archive
from .checksums import sha256_file
from .docker_client import said
from .errors import UserError
from .matrix import Target
from .provenance import rfc3339


def base_epoch(target: Target) -> int:
    """Files dated no later than this came with the base (see reproducible.stamp); 0 when unknown."""
    return target.base.bootstrap.source_date_epoch if target.base.bootstrap else 0


def local_tag(target: Target) -> str:
    return target.base_tag


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


def ensure_base(client, target: Target, emit, force_bootstrap: bool = False, update_manifest: bool = False) -> str:
    ref = target.base.runtime
    if ref and not force_bootstrap and not update_manifest and (_has(client, ref) or _try_pull(client, ref, emit)):
        return ref
    if target.base.bootstrap is None:
        raise UserError(f"base image {ref} is not available and target {target.name} has no bootstrap recipe "
                        "(only the cpu target can be built without a registry)")
    tag = local_tag(target)
    if not force_bootstrap and not update_manifest and _has(client, tag):
        emit(f"base: using the bootstrapped {tag}")
        return tag
    bootstrap(client, target, tag, emit, update_manifest)
    return tag


def _answers(url: str, suite: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/dists/{suite}/Release", timeout=10) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def packages_in(rootfs: Path) -> list[str]:
    """`package=version` of every installed package in the rootfs tarball's dpkg database, sorted."""
    with tarfile.open(rootfs) as tar:
        member = next((m for m in tar if m.name.lstrip("./") == "var/lib/dpkg/status"), None)
        if member is None:
            raise UserError("the bootstrapped rootfs has no var/lib/dpkg/status")
        status = tar.extractfile(member).read().decode()
    out = []
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if fields.get("Status", "").endswith(" installed"):
            out.append(f"{fields['Package']}={fields['Version']}")
    return sorted(out)


def manifest_difference(pinned: list[str], got: list[str]) -> str | None:
    """One line naming what differs (the first few), or None."""
    want, have = dict(p.split("=", 1) for p in pinned), dict(p.split("=", 1) for p in got)
    changed = [f"{n} {want[n]} -> {have[n]}" for n in sorted(want) if n in have and have[n] != want[n]]
    changed += [f"{n} {want[n]} missing" for n in sorted(want) if n not in have]
    changed += [f"{n} {have[n]} added" for n in sorted(have) if n not in want]
    if not changed:
        return None
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    return f"{len(changed)} packages differ ({'; '.join(changed[:4])}{more})"


def check_manifest(target: Target, got: list[str], update: bool, emit) -> None:
    path = REPO_ROOT / target.base.bootstrap.manifest
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{line}\n" for line in got))
        emit(f"base: wrote {target.base.bootstrap.manifest} ({len(got)} packages)")
        return
    try:
        pinned = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    except FileNotFoundError:
        raise UserError(f"{target.base.bootstrap.manifest} is missing: run `python build.py base --arch {target.name} "
                        "--update-manifest`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{target.base.bootstrap.manifest}: cannot be read ({exc})") from None
    malformed = next((line for line in pinned if "=" not in line.strip("=")), None)
    if malformed is not None:
        raise UserError(f"{target.base.bootstrap.manifest}: {malformed[:80]!r} is not a package=version line")
    difference = manifest_difference(pinned, got)
    if difference:
        raise UserError(f"base: Debian's archive gave a package set that differs from {target.base.bootstrap.manifest}: "
                        f"{difference}; review, then `python build.py base --arch {target.name} --update-manifest`")


def bootstrap(client, target: Target, tag: str, emit, update_manifest: bool = False) -> str:
    """mmdebstrap the suite into a tarball, check its packages, wrap it as a one-layer docker-archive, load it."""
    boot = target.base.bootstrap
    if shutil.which("mmdebstrap") is None:
        raise UserError("mmdebstrap is not installed (apt-get install mmdebstrap); it makes the Debian base image "
                        "when no registry is reachable")
    mirror = boot.snapshot if boot.snapshot and _answers(boot.snapshot, boot.suite) else boot.mirror
    if boot.snapshot and mirror != boot.snapshot:
        emit(f"base: {boot.snapshot} does not answer; bootstrapping from {boot.mirror}, checked against the manifest")
    packages = target.base_packages()
    with tempfile.TemporaryDirectory(prefix="dsv4-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        cmd = ["mmdebstrap", f"--variant={boot.variant}", "--quiet", "--format=tar",
               *([f"--include={','.join(packages)}"] if packages else []), boot.suite, str(rootfs), mirror]
        emit(f"base: {' '.join(cmd)} (SOURCE_DATE_EPOCH={boot.source_date_epoch})")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(boot.source_date_epoch)}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"mmdebstrap failed: {last}")
        if boot.manifest:
            check_manifest(target, packages_in(rootfs), update_manifest, emit)
        layer = sha256_file(rootfs)
        config = oci_archive.canonical_json(base_config(layer, target))
        try:
            client.images.load(oci_archive.write_stream(config, [tag], [(layer, rootfs)]))
        except APIError as exc:
            raise UserError(f"docker load of the bootstrapped base failed: {said(exc)}") from None
    image = client.images.get(tag)
    emit(f"base: loaded {tag} ({image.id[:19]}, rootfs sha256 {layer[:12]})")
    return tag


def base_config(layer: str, target: Target) -> dict:
    """The image config of the bootstrapped base: fixed by its inputs, so its ID is too."""
    boot = target.base.bootstrap
    created = rfc3339(boot.source_date_epoch)
    labels = {"io.dsv4-flash.base.rootfs-sha256": layer, "io.dsv4-flash.base.recipe": target.base_recipe()}
    if target.base.runtime:
        labels["io.dsv4-flash.base.stands-for"] = target.base.runtime
    return {
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["bash"],
                   "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]},
        "history": [{"created": created, "created_by": f"mmdebstrap {boot.suite} ({boot.variant})"}],
    }
