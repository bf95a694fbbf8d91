"""What prove needs to know about one target, read from the matrix in one place (`from_target`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import REPO_ROOT
from ..errors import UserError
from ..download import CACHE

CACHE_DIR = CACHE / "prove"
FIXTURE_MODEL = REPO_ROOT / "tests" / "fixtures" / "models" / "dsv4-flash-nvfp4-fp8-mtp"
# Constructed configs of the other checkpoints a target serves (serve.models), by model id.
FIXTURE_MODELS = {"canada-quant/DeepSeek-V4-Flash-W4A16-FP8-MTP":
                  REPO_ROOT / "tests" / "fixtures" / "models" / "dsv4-flash-w4a16-fp8-mtp"}
ARCHS_DIR = REPO_ROOT / "archs"


@dataclass(frozen=True)
class Device:
    capability: str
    name: str
    memory_mib: int


@dataclass(frozen=True)
class Kernel:
    source: str  # a vLLM source file, relative to the sdist
    archs: str   # the CMake variable holding its arch list
    sass: str    # the SASS cuobjdump must find, e.g. sm_120f


@dataclass(frozen=True)
class ProveTarget:
    name: str
    target: object  # the matrix Target, handed back to sources.fetch_sdist and patches.apply_series
    python: str
    vllm_version: str
    cuda: str
    torch_cuda_arch_list: str
    flashinfer_version: str
    flashinfer_cuda_arch_list: str
    runtime_lock: Path
    prove_lock: Path
    toolchain: tuple[str, ...]  # requirement names from the prove lock installed as CUDA_HOME
    patches: tuple[tuple[str, str], ...]  # (file, sha256)
    serve_defaults: Path
    runtime_packages: tuple[str, ...]
    build_type: str                 # CMAKE_BUILD_TYPE of the image's compile (vLLM's release: Release)
    gpus: int
    nvlink: bool
    devices: tuple[Device, ...]
    max_speculative_tokens: int
    kernel: Kernel
    flashinfer_prebuilt: tuple[str, ...]
    flashinfer_cubins_baked: bool
    cuda_wheels: tuple[str, ...] = ()  # the CUDA toolchain the runtime installs from PyPI (nvcc among them)

    @property
    def archs_file(self) -> Path:
        return ARCHS_DIR / f"{self.name}.txt"


def _requirement_name(spec: str) -> str:
    return spec.split("=")[0].split(">")[0].split("<")[0].split("[")[0].strip().lower().replace("_", "-")


def from_target(target) -> ProveTarget:
    """The adapter: the only place prove reads the matrix."""
    if target.prove is None or not target.is_cuda:
        raise UserError(f"target {target.name} has no [targets.{target.name}.prove] table; prove covers the sm targets",
                        exit_code=2)
    tc, prove, vllm = target.toolchain, target.prove, target.vllm
    return ProveTarget(
        name=target.name, target=target, python=tc.python, vllm_version=vllm.version, cuda=tc.cuda,
        torch_cuda_arch_list=tc.torch_cuda_arch_list, flashinfer_version=tc.flashinfer,
        flashinfer_cuda_arch_list=tc.flashinfer_cuda_arch_list,
        runtime_lock=REPO_ROOT / target.lock_paths["runtime"],
        prove_lock=REPO_ROOT / target.lock_files["prove"],
        toolchain=tuple(_requirement_name(r) for r in prove.toolchain),
        patches=tuple((p.file, p.sha256) for p in target.patches),
        serve_defaults=REPO_ROOT / target.serve_defaults_path,
        runtime_packages=tuple(tc.runtime_packages),
        cuda_wheels=tuple(tc.cuda_wheels),
        build_type=target.vllm.compile.cmake_build_type if target.vllm.compile else "RelWithDebInfo",
        gpus=prove.gpus, nvlink=prove.nvlink,
        devices=tuple(Device(d.capability, d.name, d.memory_mib) for d in prove.devices),
        max_speculative_tokens=prove.max_speculative_tokens,
        kernel=Kernel(source=prove.kernel.source, archs=prove.kernel.archs, sass=prove.kernel.sass),
        # What the image prebuilds and bakes is [targets.<t>.flashinfer] (the flashinfer-aot and flashinfer-cubins
        # stages build from the same table): one source for the image and for what prove says of it.
        flashinfer_prebuilt=tuple(m.name for m in target.flashinfer.modules) if target.flashinfer else (),
        flashinfer_cubins_baked=bool(target.flashinfer and target.flashinfer.cubin_packages),
    )
