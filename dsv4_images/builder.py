"""Carry out a build plan: the base, the locked packages on a loopback index, the BuildKit build,
then (as the plan says) the reproducible rewrite, the SBOM (a mismatch with the locks fails here) and the push."""

from __future__ import annotations

import os
import time

from docker.errors import APIError, DockerException

from . import REPO_ROOT, base, buildkit, cubins, externals, publish, render, reproducible, wheelhouse
from .attest import documents, sbom, statements
from .errors import UserError
from .matrix import Matrix
from .plan import BuildPlan
from .sources import fetch_sdist


def execute(client, matrix: Matrix, plan: BuildPlan, emit=print, index: bool = False) -> buildkit.BuildResult:
    """Check the generated files, get a base and the locked packages, build, then push. With `index`, the
    reproducible rewrite also records every file's digest (result.normalized), as `check` needs to name the
    files of a layer that differs without a second pass over the image."""
    drifted = render.check(matrix)
    if drifted:
        raise UserError(f"{', '.join(drifted)} differ from templates/ and matrix.toml: run `python build.py render`")
    began = time.time()
    target, epoch, mode = plan.target, plan.provenance.epoch, plan.vllm_source
    if mode == "sdist" and target.unresolved_externals():  # the Dockerfile would refuse too, later
        raise UserError(target.unresolved_externals())
    cubins.preflight(target, plan.build_args.get("FLASHINFER_MODULE_SET"),
                     plan.build_args.get("FLASHINFER_CUBINS_REPOSITORY"), emit)  # minutes before the stage would
    runtime_base = base.ensure_base(client, target, emit)
    args = dict(plan.build_args, RUNTIME_BASE=runtime_base)
    if runtime_base != target.base.runtime:
        args["BUILD_BASE"] = runtime_base
    files = [f for rel in target.locks_for(mode).values()
             for f in wheelhouse.resolve_lock(REPO_ROOT / rel, target.toolchain.python, target.toolchain.wheel_platform)]
    size = wheelhouse.fetch(files, progress=emit)
    emit(f"packages: {len(files)} locked files ({size / 1e9:.2f} GB) verified in {wheelhouse.downloads.CACHE / 'files'}")
    extra = {}
    if mode == "sdist" and target.vllm.sdist_url:
        sdist = fetch_sdist(target, progress=emit)
        extra[sdist.name] = sdist
        extra.update(externals.fetch_all(target, progress=emit))
    # On the target's port another build of the same target may be serving its index: wait for it rather than
    # fail; an explicit DSV4_WHEEL_SERVER_PORT fails at once.
    wait = 0 if os.environ.get("DSV4_WHEEL_SERVER_PORT") else 3 * 3600
    with wheelhouse.LoopbackIndex(files, extra, wait_s=wait, emit=emit, target=target.name) as index:
        args["PIP_INDEX_URL"] = f"{index.url}/simple"
        if extra:
            args["VLLM_SDIST_URL"] = f"{index.url}/files/{sdist.name}"
            if target.externals:
                args["VLLM_EXTERNALS_URL"] = f"{index.url}/files/{externals.MIRROR_PREFIX}"
        context = buildkit.context_tar(REPO_ROOT, plan.context_files, epoch)
        emit(f"building {plan.tags[0]} from {plan.dockerfile} ({len(context) / 1e3:.0f} kB context)")
        started = time.monotonic()
        result = buildkit.build(client, context, plan.dockerfile, plan.tags, args, plan.stage, network_host=True,
                                no_cache=plan.no_cache, emit=emit)
    emit(f"built {result.image_id[:19]} in {time.monotonic() - started:.0f}s "
         f"({result.cached_steps}/{result.steps} steps cached); tags: {', '.join(plan.tags)}")
    emit(f"timing: build {time.monotonic() - started:.1f}s")
    if plan.reproducible:
        started = time.monotonic()
        image = reproducible.normalize(client, plan.tags[0], epoch, base.base_epoch(target), load=True, index=index,
                                       progress=emit)
        for ref in plan.tags[1:]:
            client.images.get(plan.tags[0]).tag(ref)
        if image.config_digest != result.image_id:
            _remove_untagged(client, result.image_id)
        result.image_id, result.normalized = image.config_digest, image
        emit(f"timing: reproducible {time.monotonic() - started:.1f}s")
        emit(f"reproducible: timestamps rewritten to SOURCE_DATE_EPOCH in {time.monotonic() - started:.0f}s; "
             f"image {image.config_digest}")
    if plan.stage == "image":  # the SBOM of what was built, checked against the locks and the plan before any push
        started = time.monotonic()
        result.sbom = sbom.generate(client, matrix, plan, plan.tags[0], REPO_ROOT / "reports", locked=files)
        emit(f"sbom: {sbom.summary(result.sbom)}")
        emit(f"timing: sbom {time.monotonic() - started:.1f}s")
    if plan.push:
        started = time.monotonic()
        for ref in plan.tags:
            result.pushed[ref] = publish.push(client, ref, emit)
            emit(f"pushed {ref} ({result.pushed[ref]})")
        emit(f"timing: push {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        resolved = statements.materials(plan, files, runtime_base, _image_id(client, runtime_base))
        documents.attach_to_pushed(plan, result.pushed, result.sbom.read_bytes() if result.sbom else None, resolved,
                                   began, time.time(), emit)
        emit(f"timing: attach {time.monotonic() - started:.1f}s")
    return result


def _image_id(client, ref: str) -> str | None:
    try:
        return client.images.get(ref).id
    except (APIError, DockerException):
        return None


def _remove_untagged(client, image_id: str) -> None:
    """Drop the build's own image once its tags point at the rewritten one (its layers stay in the build cache)."""
    try:
        if not client.images.get(image_id).tags:
            client.images.remove(image_id)
    except (APIError, DockerException):  # in use by a container, or already gone: leave it
        pass
