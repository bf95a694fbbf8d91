"""Plan, build, tag and push one target's image with the Docker Python SDK."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import docker
from docker.errors import APIError, DockerException

from . import REPO_ROOT, base, buildkit, render, reproducible, wheelhouse
from .errors import UserError, daemon_said
from .matrix import Matrix, Target
from .sources import fetch_sdist

PUSH_ATTEMPTS = 3


def docker_client():
    """A client for the local daemon, or one clear line saying why there is none."""
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        reason = " ".join(str(exc).split())
        raise UserError(f"no Docker daemon at {where}: {reason[:200]}") from None


def explain_daemon_failure(exc: Exception) -> str:
    """What the daemon said, on one line; for a full disk, how much is free where and what frees more."""
    message = daemon_said(exc)
    if "no space left on device" not in message:
        return f"the Docker daemon failed: {message[:300]}"
    root = "/var/lib/docker"  # the default DockerRootDir; the daemon did not say which disk
    free = f"{shutil.disk_usage(root).free / 1e9:.1f} GB free on {root}" if os.path.isdir(root) else "disk full"
    return (f"the Docker daemon ran out of disk space ({free}): {message[:200]}; "
            "`docker builder prune` and `docker image prune` free the build cache and unused images")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH from the environment, else the last commit's time, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH") or _git("log", "-1", "--format=%ct") or "0"
    try:
        return int(value)
    except ValueError:
        raise UserError(f"SOURCE_DATE_EPOCH={value!r} is not an integer number of seconds") from None


def revision() -> tuple[str, str]:
    """(full revision, short revision), with '-dirty' when the work tree has changes."""
    full = _git("rev-parse", "HEAD") or "unknown"
    short = full[:12] if full != "unknown" else "unknown"
    if full != "unknown" and _git("status", "--porcelain", "--untracked-files=no"):
        full, short = full + "-dirty", short + "-dirty"
    return full, short


@dataclass
class BuildPlan:
    target: Target
    dockerfile: str
    context_files: list[str]
    build_args: dict[str, str]
    tags: list[str]
    labels: dict[str, str]
    stage: str = "image"
    push: bool = False
    no_cache: bool = False
    reproducible: bool = False
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        """The plan for machines (the CI workflow reads build args, tags and labels from it)."""
        return json.dumps({"target": self.target.name, "dockerfile": self.dockerfile, "stage": self.stage,
                           "context": self.context_files, "build_args": self.build_args, "tags": self.tags,
                           "labels": self.labels, "push": self.push, "reproducible": self.reproducible},
                          indent=2, sort_keys=True)

    def describe(self) -> str:
        lines = [f"target:      {self.target.name} ({self.target['description']})",
                 f"dockerfile:  {self.dockerfile} (stage {self.stage})",
                 f"context:     {len(self.context_files)} files: {', '.join(self.context_files)}",
                 "build args:"] + [f"  {k}={v}" for k, v in sorted(self.build_args.items())]
        lines += ["tags:"] + [f"  {t}" for t in self.tags]
        lines += ["labels:"] + [f"  {k}={v}" for k, v in sorted(self.labels.items())]
        lines += [f"push:        {'yes' if self.push else 'no'}", f"no cache:    {'yes' if self.no_cache else 'no'}",
                  f"reproducible: {'yes (timestamps rewritten to SOURCE_DATE_EPOCH)' if self.reproducible else 'no'}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def plan(matrix: Matrix, target: Target, *, image: str | None = None, owner: str | None = None,
         tags: list[str] | None = None, push: bool = False, no_cache: bool = False, unpatched: bool = False,
         reproducible: bool | None = None) -> BuildPlan:
    """What a build of `target` will do. Pushed images are always made reproducible."""
    image = image or matrix.image_name(owner)
    full_rev, short_rev = revision()
    epoch = source_date_epoch()
    created = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = f"{target['vllm']['version']}-{target.name}"
    suffix = "-unpatched" if unpatched else ""
    if tags:
        refs = [t if ("/" in t or ":" in t) else f"{image}:{t}" for t in tags]
    else:
        refs = [f"{image}:{t}{suffix}" for t in target["tags"]] + [f"{image}:{version}{suffix}",
                                                                   f"{image}:{short_rev}-{target.name}{suffix}"]
    build_args = {"BUILD_CREATED": created, "VCS_REF": full_rev, "IMAGE_VERSION": f"{version}-{short_rev}",
                  "SOURCE_URL": matrix.project["source"].format(owner=matrix.owner(owner)),
                  "APPLY_PATCHES": "0" if unpatched else "1", "SOURCE_DATE_EPOCH": str(epoch)}
    labels = {k: v for k, v in render.image_labels(target)}
    labels.update({"org.opencontainers.image.revision": full_rev, "org.opencontainers.image.created": created,
                   "org.opencontainers.image.version": build_args["IMAGE_VERSION"],
                   "org.opencontainers.image.source": build_args["SOURCE_URL"],
                   "io.dsv4-flash.patches.applied": build_args["APPLY_PATCHES"]})
    locks = list(render.lock_paths(target).values())
    context = [f"Dockerfile.{target.name}", f"{render.SERVE_DEFAULTS_DIR}/{target.name}.json",
               "dsv4_images/in_image/entrypoint.py", "dsv4_images/in_image/checkpoint.py", *locks,
               *[p["file"] for p in target.patches]]
    if "tiny_model" in target.data:
        context.append("dsv4_images/in_image/tinymodel.py")
    notes = []
    if full_rev.endswith("-dirty"):
        notes.append("the work tree has uncommitted changes: the revision label says -dirty")
    return BuildPlan(target, f"Dockerfile.{target.name}", context, build_args, refs, labels, push=push,
                     no_cache=no_cache, reproducible=push if reproducible is None else reproducible, notes=notes)


def execute(client, matrix: Matrix, p: BuildPlan, emit=print) -> buildkit.BuildResult:
    """Check the generated files, get a base and the locked packages, build, then push."""
    drifted = render.check(matrix)
    if drifted:
        raise UserError(f"{', '.join(drifted)} differ from templates/ and matrix.toml: run `python build.py render`")
    target = p.target
    runtime_base = base.ensure_base(client, target, emit)
    args = dict(p.build_args, RUNTIME_BASE=runtime_base)
    if runtime_base != target["base"]["runtime"]:
        args["BUILD_BASE"] = runtime_base
    files = []
    extra = {}
    for rel in render.lock_paths(target).values():
        files += wheelhouse.resolve_lock(REPO_ROOT / rel, target["toolchain"]["python"], target["toolchain"]["wheel_platform"])
    size = wheelhouse.fetch(files, progress=emit)
    emit(f"packages: {len(files)} locked files ({size / 1e9:.2f} GB) verified in {wheelhouse.CACHE / 'files'}")
    if target["vllm"]["source"] == "sdist":
        sdist = fetch_sdist(target, progress=emit)
        extra[sdist.name] = sdist
    with wheelhouse.LoopbackIndex(files, extra) as index:
        args["PIP_INDEX_URL"] = f"{index.url}/simple"
        if extra:
            args["VLLM_SDIST_URL"] = f"{index.url}/files/{next(iter(extra))}"
        context = buildkit.context_tar(REPO_ROOT, p.context_files, int(p.build_args["SOURCE_DATE_EPOCH"]))
        emit(f"building {p.tags[0]} from {p.dockerfile} ({len(context) / 1e3:.0f} kB context)")
        started = time.monotonic()
        result = buildkit.build(client, context, p.dockerfile, p.tags, args, p.stage, network_host=True,
                                no_cache=p.no_cache, emit=emit)
    emit(f"built {result.image_id[:19]} in {time.monotonic() - started:.0f}s "
         f"({result.cached_steps}/{result.steps} steps cached); tags: {', '.join(p.tags)}")
    emit(f"timing: build {time.monotonic() - started:.1f}s")
    if p.reproducible:
        started = time.monotonic()
        image = reproducible.normalize(client, p.tags[0], int(p.build_args["SOURCE_DATE_EPOCH"]), load=True, progress=emit)
        for ref in p.tags[1:]:
            client.images.get(p.tags[0]).tag(ref)
        if image.config_digest != result.image_id:
            _remove_untagged(client, result.image_id)
        result.image_id = image.config_digest
        emit(f"timing: reproducible {time.monotonic() - started:.1f}s")
        emit(f"reproducible: timestamps rewritten to SOURCE_DATE_EPOCH in {time.monotonic() - started:.0f}s; "
             f"image {image.config_digest}")
    if p.push:
        started = time.monotonic()
        for ref in p.tags:
            digest = push(client, ref, emit)
            emit(f"pushed {ref} ({digest})")
        emit(f"timing: push {time.monotonic() - started:.1f}s")
    return result


def _remove_untagged(client, image_id: str) -> None:
    """Drop the build's own image once its tags point at the rewritten one (its layers stay in the build cache)."""
    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
    except (APIError, DockerException):  # in use by a container, or already gone: leave it
        pass


def push(client, ref: str, emit=print, attempts: int = PUSH_ATTEMPTS) -> str:
    """Push one tag, retrying a bounded number of times; returns the manifest digest."""
    repository, tag = ref.rsplit(":", 1)
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            digest = None
            for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    raise APIError(chunk["error"])
                digest = chunk.get("aux", {}).get("Digest", digest)
            if digest:
                return digest
            last = "the registry returned no digest"
        except (APIError, DockerException) as exc:
            last = daemon_said(exc)
        if attempt < attempts:
            emit(f"push of {ref} failed (attempt {attempt}/{attempts}): {last[:200]}; retrying")
            time.sleep(2 * attempt)
    raise UserError(f"push of {ref} failed after {attempts} attempts: {last[:300]}")

