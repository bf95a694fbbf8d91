"""Patch series: checksums, the Python-only rule, and applying them to the pinned vLLM source.

`apply_series` applies a target's patches in order, with GNU patch, to a pristine tree: the
unpacked sdist for source targets, the unpacked wheel for wheel targets (the same layout as
site-packages, where the Dockerfile applies them). A patch that does not apply is an error that
names the patch and the file.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import zipfile
from pathlib import Path

from . import REPO_ROOT, wheelhouse
from .errors import UserError
from .checksums import sha256_file
from .matrix import Patch, Target
from .sources import extract, fetch_sdist


def verify_checksum(patch: Patch, root: Path = REPO_ROOT) -> Path:
    path = root / patch.file
    actual = sha256_file(path)
    if actual != patch.sha256:
        raise UserError(f"checksum mismatch for {patch.file}: matrix.toml pins sha256 {patch.sha256}, the file has {actual}")
    return path


def touched_files(patch_text: str) -> list[str]:
    files = []
    for line in patch_text.splitlines():
        if line.startswith("+++ "):
            name = line[4:].split("\t")[0].strip()
            files.append(name.split("/", 1)[1] if "/" in name else name)
    return files


def header(patch_text: str) -> str:
    """The explanation above the first diff (what it fixes, which upstream PR tracks it)."""
    return patch_text.split("\n--- ", 1)[0]


def check_policy(name: str, text: str) -> None:
    """Patches touch Python files under vllm/ only and name the upstream PR or issue that tracks them."""
    files = touched_files(text)
    if not files:
        raise UserError(f"{name}: contains no diff")
    wrong = [f for f in files if not (f.startswith("vllm/") and f.endswith(".py"))]
    if wrong:
        raise UserError(f"{name}: touches {', '.join(wrong)}; patches must be Python files under vllm/ "
                        "(they are applied after the CUDA compile stage)")
    if not re.search(r"(?im)^(tracked upstream|upstream):", header(text)):
        raise UserError(f"{name}: its header must say which upstream PR or issue tracks it ('Tracked upstream: ...')")


def apply_patch(patch_path: Path, tree: Path, name: str) -> list[str]:
    """Apply one patch with GNU patch; returns the files it patched."""
    result = subprocess.run(["patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-d", str(tree),
                             "-i", str(patch_path)], capture_output=True, text=True)
    patched = re.findall(r"^patching file (\S+)", result.stdout, re.M)
    if result.returncode != 0:
        missing = re.search(r"can't find file to patch|No file to patch", result.stdout)
        unreached = [f for f in touched_files(patch_path.read_text()) if f not in patched]
        failing = (unreached[0] if missing and unreached else patched[-1] if patched else "?")
        reason = "the file does not exist" if missing else \
            (re.search(r"Hunk #\d+ FAILED at \d+", result.stdout) or re.search(r".+", result.stdout or "failed")).group(0)
        raise UserError(f"patch {name} does not apply to {failing}: {reason}")
    return patched


def pristine_tree(target: Target, dest: Path, progress=print, mode: str | None = None) -> Path:
    """An unpacked copy of what the target's patches apply to, for one way of getting vLLM (default: the
    target's own): the sdist, or the locked wheel (its own wheel lock, else the runtime lock's package)."""
    if (mode or target.vllm.source) == "sdist":
        return extract(fetch_sdist(target, progress), dest)
    lock_rel = target.lock_paths.get("wheel", target.lock_paths["runtime"])
    package = target.vllm.package or "vllm"
    lock = wheelhouse.resolve_lock(REPO_ROOT / lock_rel, target.toolchain.python, target.toolchain.wheel_platform)
    wheel = next((f for f in lock if f.project == package), None)
    if wheel is None:
        raise UserError(f"{lock_rel} does not lock {package}")
    path = wheelhouse.download(wheel)
    root = dest / "site-packages"
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.startswith("vllm/") and n.endswith(".py")]
        zf.extractall(root, members=members)
    return root


def apply_series(target: Target, tree: Path, patch_files: list[tuple[str, Path]] | None = None,
                 label: str | None = None) -> list[str]:
    """Apply the target's series (or the given (name, path) list) in order; returns report lines."""
    lines = []
    series = patch_files if patch_files is not None else \
        [(p.name, verify_checksum(p)) for p in target.patches]
    for name, path in series:
        text = path.read_text()
        check_policy(name, text)
        patched = apply_patch(path, tree, name)
        lines.append(f"{label or target.name}: {name} applies cleanly ({', '.join(patched)})")
    return lines


def check_targets(targets: list[Target], progress=print) -> list[str]:
    lines = []
    for target in targets:
        if not target.patches:
            lines.append(f"{target.name}: no patches")
            continue
        for mode in target.vllm.modes:  # the patches must apply to vLLM whichever way it comes
            with tempfile.TemporaryDirectory(prefix=f"dsv4-patches-{target.name}-") as tmp:
                tree = pristine_tree(target, Path(tmp), progress, mode)
                label = f"{target.name} ({mode})" if len(target.vllm.modes) > 1 else None
                lines += apply_series(target, tree, label=label)
    return lines
