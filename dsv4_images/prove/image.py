"""`prove --image IMAGE`: the claims executed in containers of the built sm image, not in a venv that imitates it.

No GPU, no network (--network none), an arbitrary UID in group 0 (4242:0), and our libcuda stub on the loader
path for this run only: a directory holding `libcuda.so.1`, a link to the image's own link stub (made from the
wheel's cuda.h when the image was built). Three parts:

- the engine step again, with the same worker and requests, its Python being the image's (a wrapper runs each
  worker call in a container); every case, scheme and backend must agree with the venv's run, since the image
  is what users get and the venv is how prove knows what the answers should be;
- worker/image_checks.py inside the image: imports without a connection, the CUDA toolkit (nvcc with the
  image's g++, C++20 <format>, Python.h, linking -lcuda), Triton compiling its launcher, FlashInfer's AOT lookup
  with JIT disabled, cuobjdump over vLLM's installed extensions, the patch series applied, the distribution
  packages equal to the committed manifest;
- the entrypoint as users run it: `--version`, `--print-command`, and `--preflight-only` on the constructed
  fixture checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

from .. import REPO_ROOT
from ..errors import UserError
from ..in_image import checkpoint
from .env import Env
from .report import Report
from .settings import FIXTURE_MODEL, ProveTarget

UID = "4242:0"
INSIDE = Path("/prove")  # where the container sees what prove mounts (outside any home it cannot traverse)
WORKER_DIR = Path(__file__).resolve().parent / "worker"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
FILES = {"cuda_toolkit": "dsv4_images/in_image/cuda_toolkit.py", "flashinfer_aot": "dsv4_images/flashinfer_aot.py",
         "sass_check": "dsv4_images/in_image/sass_check.py"}
FORWARDED = ("DSV4_PROVE_PLATFORM", "FLASHINFER_CUDA_ARCH_LIST")
WRAPPER = """#!/usr/bin/env python3
# prove --image: the worker's Python is {image}'s; host paths in the arguments become the mounted ones.
import os, sys
MOUNTS = {mounts!r}
def inside(arg):
    for host, there in MOUNTS.items():
        if arg == host or arg.startswith(host + "/"):
            return there + arg[len(host):]
    return arg
os.execvp("docker", {command!r} + [inside(a) for a in sys.argv[1:]])
"""


def inspect(image: str) -> dict:
    result = subprocess.run(["docker", "image", "inspect", image], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"--image {image}: {last}")
    return json.loads(result.stdout)[0]


class Mounts:
    """Host directories prove gives the container, each at /prove/<name>, and the path mapping between them."""

    def __init__(self, work: Path, pristine: Path | None = None):
        self.host = {"work": work, "worker": WORKER_DIR, "fixtures": FIXTURES, "dsv4_images": REPO_ROOT / "dsv4_images",
                     "patches": REPO_ROOT / "patches", "bases": REPO_ROOT / "bases"}
        if pristine:
            self.host["pristine"] = pristine

    def inside(self, path: Path) -> Path:
        for name, host in self.host.items():
            if path == host or host in path.parents:
                return INSIDE / name / path.relative_to(host)
        raise UserError(f"prove --image: {path} is not in a mounted directory")

    def mapping(self) -> dict[str, str]:
        return {str(host): str(INSIDE / name) for name, host in self.host.items()}

    def docker_run(self, image: str, extra: list[str] | None = None) -> list[str]:
        cmd = ["docker", "run", "--rm", "--network", "none", "--user", UID, "--shm-size", "1g"]
        for name, host in self.host.items():
            cmd += ["-v", f"{host}:{INSIDE / name}:{'rw' if name == 'work' else 'ro'}"]
        return cmd + (extra or []) + [image]


def prepare(venv: Env, image: str, pt: ProveTarget, work: Path) -> tuple[Env, Mounts]:
    """An Env whose python is the image's (a wrapper runs each call in a container), and the mounts it uses."""
    info = inspect(image)
    labels = info["Config"].get("Labels") or {}
    if labels.get("io.dsv4-flash.target") != pt.name:
        raise UserError(f"--image {image} is built for target {labels.get('io.dsv4-flash.target')!r}, not {pt.name}")
    cuda_home = dict(item.split("=", 1) for item in info["Config"].get("Env") or []).get("CUDA_HOME")
    if not cuda_home:
        raise UserError(f"--image {image} sets no CUDA_HOME: not an sm image")
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o1777)  # the container's user (4242:0) writes results, logs and FlashInfer's workspace here
    stub = work / "libcuda-stub"
    stub.mkdir(exist_ok=True)
    link = stub / "libcuda.so.1"
    link.unlink(missing_ok=True)
    link.symlink_to(f"{cuda_home}/lib/stubs/libcuda.so")  # resolves inside the container
    mounts = Mounts(work, venv.pristine)
    environment = [flag for name in FORWARDED for flag in ("-e", name)] + [
        "-e", f"LD_LIBRARY_PATH={mounts.inside(stub)}", "-e", "HF_HUB_OFFLINE=1", "-e", "PYTHONNOUSERSITE=1",
        "-e", f"FLASHINFER_WORKSPACE_BASE={mounts.inside(work) / 'flashinfer-workspace'}"]
    wrapper = work / "image-python"
    wrapper.write_text(WRAPPER.format(image=image, mounts=mounts.mapping(),
                                      command=mounts.docker_run(image, [*environment, "--entrypoint", "python"])))
    wrapper.chmod(0o755)
    env = replace(venv, root=work, python=wrapper, site_packages=Path(f"/opt/venv/lib/python{pt.python}/site-packages"),
                  cuda_home=Path(cuda_home), stub_dir=stub, pristine=mounts.inside(venv.pristine), built_now=False)
    return env, mounts


def image_checks(report: Report, image: str, pt: ProveTarget, target, mounts: Mounts,
                 only: list[str] | None = None) -> None:
    """worker/image_checks.py in a container of the image: every check, or the ones named in `only`."""
    at = lambda rel: str(mounts.inside(REPO_ROOT / rel))  # noqa: E731
    request = {"files": {**{k: at(v) for k, v in FILES.items()}, "patches": [at(file) for file, _ in pt.patches],
                         "manifest": at(target.base.bootstrap.manifest)},
               "cuda_release": target.cuda_release, "gcc_min": target.toolchain.gcc_min_major,
               "flashinfer_archs": target.toolchain.flashinfer_cuda_arch_list.split(),
               "compute_capabilities": list(target.compute_capabilities),
               "sass_required": list(target.vllm.sass.required),
               "flashinfer_modules": [[m.name, m.generator] for m in target.flashinfer.modules],
               "flashinfer_sets": target.flashinfer.set_definitions(), "only": only}
    work = mounts.host["work"]
    req, res = work / "image-checks.json", work / "image-checks.result.json"
    req.write_text(json.dumps(request))
    cmd = mounts.docker_run(image, ["-e", f"LD_LIBRARY_PATH={mounts.inside(work / 'libcuda-stub')}",
                                    "--entrypoint", "python"])
    log = work / "image-checks.log"
    with open(log, "w") as out:
        proc = subprocess.run([*cmd, *(str(mounts.inside(p)) for p in (WORKER_DIR / "image_checks.py", req, res))],
                              stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if not res.is_file():
        tail = log.read_text().strip().splitlines()[-1:] or ["no output"]
        report.add("image.checks", False, f"the checks (exit {proc.returncode}) produced no result: {tail[0][:300]}")
        return
    for item in json.loads(res.read_text()):
        report.add(f"image.{item['name']}", bool(item["ok"]), item["detail"])


def checkpoint_with_shards(dst: Path) -> Path:
    """The constructed fixture (config, tokenizer, index) made whole for the preflight, which reads the index and
    the shards' headers: the fixture was made for vLLM's config and names a few tensors in two shards that are
    not there. Its index gets one tensor for every main layer and MTP family the checkpoint's profile requires,
    and each shard a header with its tensors as BF16 of shape [1] (the card: the MTP block is BF16)."""
    shutil.copytree(FIXTURE_MODEL, dst, dirs_exist_ok=True)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    weight_map = index["weight_map"]
    shard = sorted(set(weight_map.values()))[0]
    layers = json.loads((dst / "config.json").read_text())["num_hidden_layers"]
    for family in checkpoint.PROFILES["canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP"]["required"]:
        if not any(name.startswith(f"mtp.0.{family}.") for name in weight_map):
            weight_map[f"mtp.0.{family}.weight"] = shard
    for layer in range(layers):
        if not any(name.startswith(f"layers.{layer}.") for name in weight_map):
            weight_map[f"layers.{layer}.attn_norm.weight"] = shard
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    for shard in sorted(set(weight_map.values())):
        names = sorted(n for n, s in weight_map.items() if s == shard)
        header = {n: {"dtype": "BF16", "shape": [1], "data_offsets": [2 * i, 2 * i + 2]} for i, n in enumerate(names)}
        raw = json.dumps(header, separators=(",", ":")).encode()
        (dst / shard).write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(2 * len(names)))
    for path in (dst, *dst.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


def entrypoint(report: Report, image: str, pt: ProveTarget, mounts: Mounts) -> None:
    """dsv4-serve as users run it, as an arbitrary UID: --version, --print-command, --preflight-only."""
    base = mounts.docker_run(image)[:-1]

    def run(args: list[str], extra: list[str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *(extra or []), image, *args], capture_output=True, text=True, timeout=600)

    version = run(["--version"])
    report.add("image.entrypoint.version", version.returncode == 0 and pt.name in version.stdout,
               version.stdout.strip() or version.stderr.strip()[-300:])
    printed = run(["--print-command"])
    expected = json.loads(pt.serve_defaults.read_text())["serve"]["model"]
    report.add("image.entrypoint.print-command", printed.returncode == 0 and printed.stdout.startswith(
        f"vllm serve {expected} "), printed.stdout.strip()[:300] or printed.stderr.strip()[-300:])
    model = checkpoint_with_shards(mounts.host["work"] / "checkpoint")
    fixture = ["-e", f"MODEL={mounts.inside(model)}"]
    preflight = run(["--preflight-only"], fixture)
    lines = preflight.stderr.strip().splitlines()
    mtp = next((line for line in lines if "preflight: MTP" in line), "")
    report.add("image.entrypoint.preflight-only", preflight.returncode == 0 and bool(mtp),
               (mtp or (lines[-1] if lines else "no output")).removeprefix("[dsv4-flash] ")[:300])


def _as_host(value, mapping: dict[str, str]):
    """The image run's answers with every mounted path written as the host path the venv run saw."""
    if isinstance(value, dict):
        return {k: _as_host(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_host(v, mapping) for v in value]
    if isinstance(value, str):
        for host, there in mapping.items():
            if value == there or value.startswith(there + "/"):
                return host + value[len(there):]
    return value


def agreement(report: Report, venv_results: dict, image_results: dict, mounts: Mounts) -> None:
    """The image's answers must be the venv's: every case's outcome and config, the schemes, the backends."""
    image_results = _as_host(image_results, mounts.mapping())
    for capability, ours in venv_results.items():
        theirs = image_results.get(capability, {})
        differ = []
        for case_id, outcome in ours.get("cases", {}).items():
            other = theirs.get("cases", {}).get(case_id) or {}
            if other.get("ok") != outcome.get("ok"):
                differ.append(f"{case_id} (venv {'accepts' if outcome.get('ok') else 'refuses'}, the image does not)")
                continue
            mine, its = outcome.get("config") or {}, other.get("config") or {}
            keys = sorted(k for k in set(mine) | set(its) if mine.get(k) != its.get(k))
            if keys:
                differ.append(f"{case_id} ({', '.join(f'{k}: {mine.get(k)!r} vs {its.get(k)!r}' for k in keys[:3])})")
        differ += [key for key in ("schemes", "backends") if ours.get(key) != theirs.get(key)]
        report.add(f"image.agrees-with-venv@{capability}", not differ,
                   f"{len(ours.get('cases', {}))} cases, schemes and backends equal" if not differ else
                   f"the image and the venv disagree on {'; '.join(differ[:4])}")
