"""What a build of one target will do: Dockerfile, build context, build arguments, tags and labels.

A plan needs no daemon (`build.py build --dry-run` prints it; the CI workflow reads it as JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import references
from .errors import UserError
from .matrix import Matrix, Target
from .provenance import Provenance


def stages(target: Target, vllm_source: str) -> list[str]:
    """The stages BuildKit builds for the image when vLLM comes this way, in dependency order."""
    tail = ["vllm-install", "patched", "image"]
    runtime = ["runtime-deps"]
    if target.flashinfer:  # a cuda image: its runtime base, FlashInfer's cubins and prebuilt modules first
        runtime = ["runtime-base", *(["flashinfer-cubins"] if target.flashinfer.cubin_packages else []),
                   "flashinfer-aot", "runtime-deps"]
    if not target.vllm.separate_dist:
        return [*runtime, *tail]
    if vllm_source == "wheel":
        return [*runtime, "vllm-from-wheel", "vllm-dist", *tail]
    return ["build-tools", "build-env", "vllm-source", "vllm-externals", "vllm-compile", "vllm-from-sdist",
            "vllm-dist", *runtime, *tail]


def fetches(target: Target, vllm_source: str) -> list[str]:
    """What build.py downloads and verifies before the build (the build gets nothing else)."""
    out = list(target.locks_for(vllm_source).values())
    if vllm_source == "sdist" and target.vllm.sdist_url:
        out.append(target.vllm.sdist_filename)
        if target.externals:
            out.append(f"{len(target.externals)} external source archives")
    return out


def describe_vllm(target: Target, vllm_source: str) -> list[str]:
    """What the plan says about where vLLM comes from, and why a build would refuse."""
    vllm = target.vllm
    if not vllm.separate_dist:
        return [f"{vllm.package}=={vllm.version} from {target.lock_paths['runtime']}"]
    if vllm_source == "wheel":
        return [f"PyPI's vllm {vllm.version} wheel, hash-locked in {target.lock_paths['wheel']}; cuobjdump checks "
                f"{len(vllm.sass.required)} extensions for SASS on {', '.join(target.compute_capabilities)}"]
    pinned = sum(1 for p in target.externals if not p.missing)
    lines = [f"compiled from {vllm.sdist_filename} (sha256 {vllm.sdist_sha256[:12]}...) for TORCH_CUDA_ARCH_LIST="
             f"{target.toolchain.torch_cuda_arch_list}, {vllm.compile.cmake_build_type}, MAX_JOBS sized to memory "
             f"({vllm.compile.job_memory_gib} GiB per nvcc job) unless set; {pinned} of {len(target.externals)} "
             "external sources pinned"]
    refusal = target.unresolved_externals()
    if refusal:
        lines.append(f"refuses to build: {refusal}")
    return lines


def check_module_set(target: Target, wanted: str | None) -> str | None:
    """The FlashInfer module set a build of `target` compiles ("full" unless a named one is asked for), or None
    for a target without FlashInfer; an unknown set is one line, exit 2."""
    if not target.flashinfer:
        if wanted:
            raise UserError(f"--flashinfer-modules: target {target.name} has no FlashInfer modules", exit_code=2)
        return None
    if wanted and wanted != "full" and wanted not in target.flashinfer.module_sets:
        raise UserError(f"--flashinfer-modules {wanted!r}: target {target.name} has the sets full"
                        f"{''.join(', ' + n for n in sorted(target.flashinfer.module_sets))}", exit_code=2)
    return wanted or "full"


@dataclass(frozen=True)
class BuildPlan:
    target: Target
    provenance: Provenance
    build_args: dict[str, str]
    tags: list[str]
    labels: dict[str, str]
    stage: str = "image"
    vllm_source: str = "wheel"
    push: bool = False
    no_cache: bool = False
    reproducible: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def dockerfile(self) -> str:
        return self.target.dockerfile

    @property
    def context_files(self) -> list[str]:
        return self.target.context_files()

    def as_json(self) -> str:
        """The plan for machines (the CI workflow reads build args, tags and labels from it)."""
        return json.dumps({"target": self.target.name, "dockerfile": self.dockerfile, "stage": self.stage,
                           "vllm_source": self.vllm_source, "stages": stages(self.target, self.vllm_source),
                           "context": self.context_files, "build_args": self.build_args, "tags": self.tags,
                           "labels": self.labels, "push": self.push, "reproducible": self.reproducible},
                          indent=2, sort_keys=True)

    def describe(self) -> str:
        lines = [f"target:      {self.target.name} ({self.target.description})",
                 f"dockerfile:  {self.dockerfile} (stage {self.stage})",
                 f"vllm:        {self.vllm_source}: " + "\n             ".join(describe_vllm(self.target, self.vllm_source)),
                 f"stages:      {' -> '.join(stages(self.target, self.vllm_source))}",
                 f"fetches:     {', '.join(fetches(self.target, self.vllm_source))} (sha256-verified on the host, "
                 "served to the build on 127.0.0.1)",
                 f"context:     {len(self.context_files)} files: {', '.join(self.context_files)}",
                 "build args:"] + [f"  {k}={v}" for k, v in sorted(self.build_args.items())]
        lines += ["tags:"] + [f"  {t}" for t in self.tags]
        lines += ["labels:"] + [f"  {k}={v}" for k, v in sorted(self.labels.items())]
        lines += [f"push:        {'yes' if self.push else 'no'}", f"no cache:    {'yes' if self.no_cache else 'no'}",
                  f"reproducible: {'yes (timestamps rewritten to SOURCE_DATE_EPOCH)' if self.reproducible else 'no'}"]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def make(matrix: Matrix, target: Target, provenance: Provenance, *, image: str | None = None, owner: str | None = None,
         tags: list[str] | None = None, push: bool = False, no_cache: bool = False, unpatched: bool = False,
         reproducible: bool | None = None, vllm: str | None = None, flashinfer_modules: str | None = None,
         cubins_repository: str | None = None) -> BuildPlan:
    """The plan for `target`, getting vLLM the way `vllm` says (default: the target's). Pushed images are
    always made reproducible. `cubins_repository` replaces where the trtllm-gen cubins come from (a mirror);
    the pins, hence the image, stay the same. Every tag is one Docker accepts (references.py), whatever the image name,
    owner or tags it was made from."""
    vllm_source = vllm or target.vllm.source
    if vllm_source not in target.vllm.modes:
        raise UserError(f"target {target.name} gets vLLM only as {' or '.join(target.vllm.modes)}, not {vllm_source}",
                        exit_code=2)
    image = image or matrix.image_name(owner)
    suffix = "-unpatched" if unpatched else ""
    if tags:
        refs = [t if ("/" in t or ":" in t) else f"{image}:{t}" for t in tags]
    else:
        refs = [f"{image}:{t}{suffix}" for t in target.tags] + [
            f"{image}:{target.version_tag}{suffix}", f"{image}:{provenance.short_revision}-{target.name}{suffix}"]
    build_args = {"BUILD_CREATED": provenance.created, "VCS_REF": provenance.revision,
                  "IMAGE_VERSION": f"{target.version_tag}-{provenance.short_revision}",
                  "SOURCE_URL": matrix.source_url(owner), "APPLY_PATCHES": "0" if unpatched else "1",
                  "SOURCE_DATE_EPOCH": str(provenance.epoch)}
    if target.vllm.separate_dist:
        build_args["VLLM_SOURCE"] = vllm_source
    notes = []
    module_set = check_module_set(target, flashinfer_modules)
    if module_set:
        build_args["FLASHINFER_MODULE_SET"] = module_set
        if module_set != "full":
            notes.append(f"FlashInfer module set {module_set!r} ({', '.join(target.flashinfer.module_sets[module_set])}): "
                         "not a release image; the rest compiles on first use")
    if cubins_repository:
        if not (target.flashinfer and target.flashinfer.cubin_packages):
            raise UserError(f"--cubins-repository: target {target.name} bakes no FlashInfer cubins", exit_code=2)
        build_args["FLASHINFER_CUBINS_REPOSITORY"] = cubins_repository
    labels = dict(target.image_labels())
    labels.update({"org.opencontainers.image.revision": provenance.revision,
                   "org.opencontainers.image.created": provenance.created,
                   "org.opencontainers.image.version": build_args["IMAGE_VERSION"],
                   "org.opencontainers.image.source": build_args["SOURCE_URL"],
                   "io.dsv4-flash.patches.applied": build_args["APPLY_PATCHES"],
                   "io.dsv4-flash.vllm.source": vllm_source})
    if "FLASHINFER_MODULE_SET" in build_args:
        labels["io.dsv4-flash.flashinfer.module-set"] = build_args["FLASHINFER_MODULE_SET"]
    for ref in refs:
        problem = references.tag_target_problem(ref)
        if problem:
            source = "--tag" if tags else "the image name (--image, --owner, $DSV4_OWNER or matrix.toml's project.image)"
            raise UserError(f"{ref[:80]!r} is not a tag Docker accepts ({problem}); check {source}")
    if provenance.dirty:
        notes.append("the work tree has uncommitted changes: the revision label says -dirty")
    return BuildPlan(target, provenance, build_args, refs, labels, vllm_source=vllm_source, push=push,
                     no_cache=no_cache, reproducible=push if reproducible is None else reproducible, notes=notes)
