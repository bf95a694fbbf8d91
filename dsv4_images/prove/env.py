"""prove's environment, cached under ~/.cache/dsv4-flash/prove/env-<key>/ and rebuilt only when its
inputs change (the key is the sha256 of them):

- venv/: CPython <target python> with the target's runtime lock plus prove's requirements (the vLLM
  wheel), installed by uv with --require-hashes --no-deps, then the target's patch series applied to
  site-packages exactly as the image applies it (pristine/ keeps the files before patching);
- toolchain/: the CUDA toolchain wheels of the prove lock (nvcc, crt, nvvm, cccl, cudart, cuobjdump,
  cmake, ninja); toolchain/nvidia/cu13 is prove's CUDA_HOME, completed with lib64 -> lib, the math
  libraries' headers and libraries from the venv, and lib/stubs/libcuda.so;
- stub/: our libcuda stub (stub.py), built from the driver symbols the installed extensions import.
"""

from __future__ import annotations

import csv
import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .. import patches as patches_mod
from ..errors import UserError
from ..locks import _uv
from ..checksums import sha256_bytes, sha256_file
from ..download import CACHE
from ..wheelhouse import PYPI_SIMPLE, parse_lock
from . import stub
from .settings import CACHE_DIR, ProveTarget

LAYOUT = 2  # bump when what an environment holds changes


@dataclass(frozen=True)
class Env:
    root: Path
    python: Path
    site_packages: Path
    cuda_home: Path
    stub_dir: Path
    pristine: Path
    toolchain: Path
    built_now: bool

    @property
    def cmake(self) -> Path:
        return self.toolchain / "cmake" / "data" / "bin" / "cmake"

    @property
    def ninja(self) -> Path:
        return self.toolchain / "bin" / "ninja"  # the ninja wheel installs its binary as a script

    def overlaps(self) -> list[dict]:
        """Files two runtime packages both ship (recorded when the environment was built)."""
        return json.loads((self.root / "complete.json").read_text()).get("overlaps", [])

    def tool(self, name: str) -> Path:
        return self.cuda_home / "bin" / name

    def run_env(self) -> dict[str, str]:
        """The environment prove's subprocesses run in: the image's CUDA_HOME and nvcc on PATH, our stub."""
        env = dict(os.environ)
        env.update({"CUDA_HOME": str(self.cuda_home), "CUDA_PATH": str(self.cuda_home),
                    "LD_LIBRARY_PATH": str(self.stub_dir),
                    "PATH": os.pathsep.join([str(self.cuda_home / "bin"), str(self.python.parent),
                                             str(self.ninja.parent), env.get("PATH", "")]),
                    "HF_HUB_OFFLINE": "1", "PYTHONNOUSERSITE": "1",
                    "FLASHINFER_WORKSPACE_BASE": str(self.root / "flashinfer-workspace")})
        return env


def find_python(version: str) -> Path:
    """$DSV4_PYTHON312 (for 3.12), else pyenv's CPython <version>, else python<version> on PATH."""
    variable = "DSV4_PYTHON" + version.replace(".", "")
    if os.environ.get(variable):
        return Path(os.environ[variable])
    root = os.environ.get("PYENV_ROOT")
    if not root and shutil.which("pyenv"):
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    candidates = sorted(glob.glob(f"{root or Path.home() / '.pyenv'}/versions/{version}.*/bin/python{version}"))
    if candidates:
        return Path(candidates[-1])
    found = shutil.which(f"python{version}")
    if found:
        return Path(found)
    raise UserError(f"prove needs CPython {version} (the image's Python): set ${variable}, install it with pyenv, "
                    f"or put python{version} on PATH")


def _requirements(path: Path) -> list[str]:
    """A hash-locked lock as `name==version --hash=...` lines (its header and annotations dropped)."""
    return [f"{r.name}=={r.version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(r.hashes))
            for r in parse_lock(path.read_text(), str(path))]


def inputs(pt: ProveTarget, python: Path) -> dict:
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True).stdout.strip()
    if not version.startswith(pt.python + "."):
        raise UserError(f"{python} is Python {version or '?'}, the image has {pt.python}")
    prove = _requirements(pt.prove_lock)
    return {"layout": LAYOUT, "python": version, "runtime": _requirements(pt.runtime_lock),
            "venv": [r for r in prove if r.split("==")[0] not in pt.toolchain],
            "toolchain": [r for r in prove if r.split("==")[0] in pt.toolchain],
            "patches": [list(p) for p in pt.patches],
            "stub": sha256_file(Path(stub.__file__))}


def _run(cmd: list, what: str, **kwargs) -> None:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        last = (result.stderr.strip() or result.stdout.strip() or "(no output)").splitlines()[-1]
        raise UserError(f"{what} failed: {last}")


def _install(root: Path, python: Path, data: dict, progress) -> None:
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv")}
    venv, uv = root / "venv", _uv()
    (root / "venv.txt").write_text("\n".join(data["runtime"] + data["venv"]) + "\n")
    (root / "toolchain.txt").write_text("\n".join(data["toolchain"]) + "\n")
    progress(f"prove env: venv from {len(data['runtime'])} locked runtime packages + {len(data['venv'])} (uv)")
    _run([uv, "venv", "--quiet", "--python", python, venv], "uv venv", env=env)
    common = ["--require-hashes", "--no-deps", "--index-url", PYPI_SIMPLE, "--no-config", "--quiet"]
    _run([uv, "pip", "install", "--python", venv / "bin" / "python", *common, "-r", root / "venv.txt"],
         "uv pip install (runtime lock)", env=env)
    progress(f"prove env: CUDA toolchain from {len(data['toolchain'])} PyPI wheels")
    _run([uv, "pip", "install", "--python", venv / "bin" / "python", "--target", root / "toolchain", *common,
          "-r", root / "toolchain.txt"], "uv pip install (CUDA toolchain)", env=env)


def overlaps(site: Path) -> list[dict]:
    """Files that two installed distributions both ship with different contents (their RECORDs)."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        name, version = record.parent.name[:-len(".dist-info")].rsplit("-", 1)
        for row in csv.reader(record.read_text().splitlines()):
            if len(row) > 1 and row[1]:
                owners.setdefault(row[0], []).append((f"{canonicalize_name(name)}=={version}", row[1]))
    groups: dict[tuple, list[str]] = {}
    for path, claims in owners.items():
        if len(claims) > 1 and len({digest for _, digest in claims}) > 1:
            groups.setdefault(tuple(sorted(d for d, _ in claims)), []).append(path)
    return [{"dists": list(dists), "files": len(paths), "example": sorted(paths)[0],
             "pip_winner": dists[0]} for dists, paths in sorted(groups.items())]


def _as_pip_installs(root: Path, data: dict, site: Path) -> list[dict]:
    """uv installs in parallel, so which of two distributions shipping the same file wins is chance.
    The image installs with pip, which installs a --no-deps requirement set in reverse name order
    (resolution/resolvelib/resolver.py: sorted by (weight, name), reverse=True): the alphabetically
    first distribution is installed last and its files win. Reinstall those winners to match."""
    found = overlaps(site)
    winners = {group["pip_winner"].split("==")[0] for group in found}
    if winners:
        (root / "pip-winners.txt").write_text("\n".join(r for r in data["runtime"] + data["venv"]
                                                    if r.split("==")[0] in winners) + "\n")
        _run([_uv(), "pip", "install", "--python", root / "venv" / "bin" / "python", "--reinstall", "--require-hashes",
              "--no-deps", "--index-url", PYPI_SIMPLE, "--no-config", "--quiet", "-r", root / "pip-winners.txt"],
             "uv pip install --reinstall (pip's order)", env={**os.environ, "UV_CACHE_DIR": str(CACHE / "uv")})
    return found


def _patch(pt: ProveTarget, site: Path, pristine: Path) -> None:
    """Keep the files the series touches, then apply it the way the image does (checksums verified)."""
    for file, _ in pt.patches:
        for rel in patches_mod.touched_files((patches_mod.REPO_ROOT / file).read_text()):
            if (site / rel).is_file():
                (pristine / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(site / rel, pristine / rel)
    patches_mod.apply_series(pt.target, site)


def _cuda_home(toolchain: Path, site: Path, stub_dir: Path) -> Path:
    home = toolchain / "nvidia" / "cu13"
    (home / "lib64").symlink_to("lib")
    for sub in ("include", "lib"):  # the math libraries torch's CMake looks for come from the venv
        for item in (site / "nvidia" / "cu13" / sub).iterdir():
            if not (home / sub / item.name).exists():
                (home / sub / item.name).symlink_to(item)
    for lib in list((home / "lib").glob("lib*.so.*")):  # unversioned names for CMake's find_library
        plain = home / "lib" / (lib.name.split(".so.")[0] + ".so")
        if not plain.exists():
            plain.symlink_to(lib.name)
    (home / "lib" / "stubs").mkdir(exist_ok=True)
    (home / "lib" / "stubs" / "libcuda.so").symlink_to(stub_dir / "libcuda.so.1")
    return home


def _layout(root: Path, python_version: str, built_now: bool) -> Env:
    site = root / "venv" / "lib" / f"python{python_version}" / "site-packages"
    return Env(root=root, python=root / "venv" / "bin" / "python", site_packages=site,
               cuda_home=root / "toolchain" / "nvidia" / "cu13", stub_dir=root / "stub",
               pristine=root / "pristine", toolchain=root / "toolchain", built_now=built_now)


def ensure(pt: ProveTarget, progress=print) -> Env:
    """The cached environment for these inputs, built first if it is missing or incomplete."""
    python = find_python(pt.python)
    data = inputs(pt, python)
    key = sha256_bytes(json.dumps(data, sort_keys=True).encode())[:16]
    root = CACHE_DIR / f"env-{key}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / f"env-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another prove building the same environment: wait for it
        if (root / "complete.json").is_file():
            return _layout(root, pt.python, built_now=False)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        started = time.monotonic()
        _install(root, python, data, progress)
        env = _layout(root, pt.python, built_now=True)
        conflicts = _as_pip_installs(root, data, env.site_packages)
        env.pristine.mkdir()
        _patch(pt, env.site_packages, env.pristine)
        symbols = stub.build(env.site_packages, env.stub_dir)
        _cuda_home(env.toolchain, env.site_packages, env.stub_dir)
        (root / "complete.json").write_text(json.dumps({**data, "stub_symbols": symbols, "overlaps": conflicts,
                                                        "seconds": round(time.monotonic() - started, 1)}, indent=1))
        return env
