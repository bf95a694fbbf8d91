"""What an image of a plan must hold, from the locks and the matrix: which locked files end up installed in it,
and which installed distributions legitimately come from no lock. The SBOM (sbom.py) records the one and its
cross-check names every departure from both."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from docker.errors import ImageNotFound

from .. import REPO_ROOT, plan, wheelhouse
from ..errors import UserError
from ..matrix import Matrix, Target
from ..plan import BuildPlan
from ..provenance import Provenance

ROOT = REPO_ROOT  # where locks/ is read (the tests point it at a small lock of their own)


@dataclass(frozen=True)
class Installed:
    """A locked file the image installs: the file, its version and the lock that names it."""
    file: wheelhouse.LockedFile
    version: str
    lock: str

    @property
    def kind(self) -> str:
        return "wheel" if self.file.filename.endswith(".whl") else "sdist"

    def __str__(self) -> str:
        return f"locked {self.kind} {self.file.project}=={self.version} (sha256 {self.file.sha256[:12]}…)"


def file_version(filename: str) -> str:
    if filename.endswith(".whl"):
        return str(parse_wheel_filename(filename)[1])
    return str(parse_sdist_filename(filename)[1])


def same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def locked_files(target: Target, vllm_source: str) -> list[wheelhouse.LockedFile]:
    """Every file the target's locks for this way of getting vLLM name, resolved against the package index
    (what builder.execute downloads; needs the index)."""
    return [f for rel in target.locks_for(vllm_source).values()
            for f in wheelhouse.resolve_lock(ROOT / rel, target.toolchain.python, target.toolchain.wheel_platform)]


def installed(target: Target, plan: BuildPlan, locked: list[wheelhouse.LockedFile]) -> list[Installed]:
    """The locked files that end up in the image's environment: every file of the runtime lock, and vLLM's own
    wheel from the wheel lock when vLLM comes as that wheel. The build lock (the sdist's compile, in
    /opt/build-venv of a build stage) and the wheel lock's cuobjdump (sass_check's, in /opt/sass-tools of a
    build stage) install nothing into the image."""
    def hashes(kind: str) -> set[str]:
        rel = target.lock_paths.get(kind)
        if not rel:
            return set()
        return {h for r in wheelhouse.parse_lock((ROOT / rel).read_text(), rel) for h in r.hashes}

    runtime, wheel = hashes("runtime"), hashes("wheel") if plan.vllm_source == "wheel" else set()
    out = []
    for f in locked:
        if f.sha256 in runtime:
            out.append(Installed(f, file_version(f.filename), target.lock_paths["runtime"]))
        elif f.sha256 in wheel and f.project == "vllm":
            out.append(Installed(f, file_version(f.filename), target.lock_paths["wheel"]))
    return out


def unlocked(target: Target, plan: BuildPlan) -> dict[str, tuple[str | None, str]]:
    """Distributions the Dockerfiles add beside the locks: name -> (the version they must have, None for any;
    why they are there). Anything else installed and in no lock fails the SBOM's cross-check."""
    allowed = {"pip": (None, "the venv's own pip, from `python -m venv` (ensurepip, Debian's python3-pip-whl)")}
    vllm = target.vllm
    if vllm.dist_alias:
        allowed["vllm"] = (vllm.dist_alias, f"metadata-only alias of {vllm.package}=={vllm.version} the Dockerfile "
                                            "writes (vLLM's CLI asks importlib.metadata for 'vllm')")
    elif plan.vllm_source == "sdist":
        allowed["vllm"] = (vllm.version, f"compiled in the build from {vllm.sdist_filename} "
                                         f"(sha256 {vllm.sdist_sha256})")
    if target.flashinfer:
        allowed["flashinfer-jit-cache"] = (f"{target.toolchain.flashinfer}+dsv4.{target.name}",
                                           "FlashInfer's JIT modules, built ahead of time in the build "
                                           "(flashinfer_aot.py)")
    return allowed


def module_set(target: Target, plan: BuildPlan) -> list[str]:
    """The FlashInfer modules the plan's module set prebuilds (none for a target without FlashInfer)."""
    if not target.flashinfer:
        return []
    return target.flashinfer.members(plan.build_args.get("FLASHINFER_MODULE_SET", "full"))


def vllm_name(target: Target) -> str:
    return canonicalize_name(target.vllm.package or "vllm")


def plan_for_image(client, matrix: Matrix, target: Target, image_ref: str) -> BuildPlan:
    """The plan an existing image was built from, as far as its labels say (revision, SOURCE_DATE_EPOCH, how vLLM
    came, patches applied, FlashInfer module set, owner): what `dsv4-images sbom --image` checks it against."""
    try:
        labels = client.images.get(image_ref).labels or {}
    except ImageNotFound:
        raise UserError(f"image {image_ref} is not in the local Docker daemon") from None
    built_for = labels.get("io.dsv4-flash.target")
    if built_for != target.name:
        what = f"a {built_for} image" if built_for else "not a dsv4-flash image (no io.dsv4-flash.target label)"
        raise UserError(f"image {image_ref} is {what}, not {target.name}", exit_code=2)
    return plan_from_labels(matrix, target, labels)


def epoch_of(created: str) -> int:
    """SOURCE_DATE_EPOCH back from the org.opencontainers.image.created label."""
    try:
        return int(datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    except (TypeError, ValueError):
        raise UserError(f"the image's created label {str(created)[:40]!r} is not YYYY-MM-DDTHH:MM:SSZ") from None


def owner_of(matrix: Matrix, source_url: str) -> str | None:
    """The owner back from the org.opencontainers.image.source label (None: not our source URL for any owner)."""
    pattern = re.escape(matrix.project.source).replace(re.escape("{owner}"), "(?P<owner>[^/]+)")
    found = re.fullmatch(pattern, source_url or "")
    return found["owner"] if found else None


def plan_from_labels(matrix: Matrix, target: Target, labels: dict[str, str], **options) -> BuildPlan:
    """The plan of an image with these labels: its revision, SOURCE_DATE_EPOCH, owner, how vLLM came, whether the
    patches were applied and the FlashInfer module set (`options` go to plan.make: tags, no_cache, ...)."""
    revision = labels.get("org.opencontainers.image.revision", "unknown")
    short = revision if revision == "unknown" else revision[:12] + ("-dirty" if revision.endswith("-dirty") else "")
    epoch = epoch_of(labels.get("org.opencontainers.image.created", "1970-01-01T00:00:00Z"))
    return plan.make(matrix, target, Provenance(revision, short, epoch),
                     owner=owner_of(matrix, labels.get("org.opencontainers.image.source", "")),
                     unpatched=labels.get("io.dsv4-flash.patches.applied") == "0",
                     vllm=labels.get("io.dsv4-flash.vllm.source") or None,
                     flashinfer_modules=labels.get("io.dsv4-flash.flashinfer.module-set") if target.flashinfer else None,
                     **options)
