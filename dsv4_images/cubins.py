"""The trtllm-gen cubin packages a build bakes, checked from the host before the build starts.

The image's flashinfer-cubins stage downloads each package the chosen module set loads and checks it
against the pins (flashinfer_aot.py fetch-cubins). That stage runs after the base and the locked
packages, minutes into a build; when the repository cannot be reached (NVIDIA's artifact server is
not reachable from every network: not from ours), the build would fail there. So the host fetches
each package's checksums.txt first, sha256-checked against its pin: a repository that does not answer,
or answers with other bytes, is one line before any build step, naming the package, the modules that
need it and the two ways on (a mirror with --cubins-repository, or a smaller module set).

The repository is not an image input: the pins decide the bytes, so a mirror gives the same image
(the build argument only reaches the flashinfer-cubins stage, whose files are copied out of it).
"""

from __future__ import annotations

from .download import CACHE, verified
from .errors import UserError
from .matrix import CubinPackage, Target


def needed(target: Target, module_set: str | None) -> list[CubinPackage]:
    """The packages the modules of `module_set` ("full": every module) load."""
    if not target.flashinfer or not module_set:
        return []
    chosen = set(target.flashinfer.members(module_set))
    return [p for p in target.flashinfer.cubin_packages if chosen & set(p.needed_by)]


def preflight(target: Target, module_set: str | None, override: str | None = None, emit=print) -> None:
    """Fetch and check every needed package's checksums.txt, or fail in one line saying what to do."""
    packages = needed(target, module_set)
    base = override or (target.flashinfer.cubins_repository if packages else None)
    for package in packages:
        url = base.rstrip("/") + "/" + package.path + "checksums.txt"
        where = CACHE / "cubins" / package.checksums_sha256 / "checksums.txt"
        try:
            verified(url, package.checksums_sha256, where)
        except UserError as exc:
            raise UserError(
                f"FlashInfer cubins: {package.name} (loaded by {', '.join(package.needed_by)}) cannot be had from "
                f"{base}: {exc}; give a mirror that serves FlashInfer's artifact paths with --cubins-repository URL, "
                f"or build a smaller set with --flashinfer-modules "
                f"{' or '.join(sorted(target.flashinfer.module_sets)) or 'SET'} (not a release image)") from None
        emit(f"cubins: {package.name}: checksums.txt from {base} matches its pin")
