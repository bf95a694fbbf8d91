"""What the image's runtime must do at serve time that nothing else checks:

- Triton builds its CUDA launcher with a C compiler against Python.h on first use;
- FlashInfer's and DeepGEMM's JIT (vLLM's bundled deep_gemm calls $CUDA_HOME/bin/nvcc) run nvcc, which
  needs a host C++ compiler;
- the FlashInfer modules a DeepSeek-V4 request needs on this target, and whether the image has them
  prebuilt (matrix: [targets.<t>.flashinfer] modules, the flashinfer-aot stage's list) or JIT-compiles them on the first request;
- every network fetch a first start and a first request make;
- pip's view of the runtime's dependency set.

The sm image cannot be built here, so which tools it has is decided from the target's runtime
packages in the matrix, and where a tool is present the same compile is executed with the host's
equivalent (gcc/g++, Python.h of prove's CPython, nvcc 13.0 from PyPI).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from ..locks import _uv
from .env import Env
from .report import Report
from .settings import ProveTarget

C_COMPILERS = ("build-essential", "gcc", "gcc-13", "gcc-14", "clang")
CXX_COMPILERS = ("build-essential", "g++", "g++-13", "g++-14", "clang")
NVCC = ("cuda-nvcc-13-0", "cuda-nvcc", "cuda-toolkit-13-0",  # apt
        "nvidia-cuda-nvcc")                                   # the hash-locked PyPI wheel (toolchain.cuda_wheels)
LAUNCHER_C = r"""
/* shaped like the launcher Triton compiles on first use: a CPython module that calls the driver */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <cuda.h>
static PyObject *launch(PyObject *self, PyObject *args) {
  CUresult err = cuInit(0);
  return PyLong_FromLong((long)err);
}
static PyMethodDef methods[] = {{"launch", launch, METH_NOARGS, "cuInit through the driver"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "dsv4_launcher", NULL, -1, methods};
PyMODINIT_FUNC PyInit_dsv4_launcher(void) { return PyModule_Create(&module); }
"""
TRIVIAL_CU = r"""
#include <cstdio>
__global__ void add_one(int *x) { x[threadIdx.x] += 1; }
int main() { int *d = nullptr; cudaMalloc(&d, 32 * sizeof(int)); add_one<<<1, 32>>>(d); printf("%d\n", (int)cudaGetLastError()); return 0; }
"""
# vLLM 0.33 backend -> the FlashInfer 0.7.2.post1 JIT modules it loads (flashinfer/jit/*.py) and what
# FlashInfer downloads for it (flashinfer/jit/cubin_loader.py get_artifact, FLASHINFER_CUBINS_REPOSITORY).
FLASHINFER = {
    "DeepseekV4FlashInferSM120Attention": [("sparse_mla_sm120", "flashinfer.jit.mla:gen_sparse_mla_sm120_module", None)],
    "DeepseekV4FlashInferMLAAttention": [("trtllm-gen sparse MLA", None, "the DeepSeek-V4 sparse MLA cubins")],  # not default
    "DeepseekV4FlashMLAAttention": [],  # vLLM's own _flashmla_C extension: nothing from FlashInfer
    "FLASHINFER_TRTLLM": [("fused_moe_trtllm_sm100", None, "trtllm-gen batched-GEMM cubins, checksums.txt, "
                           "flashinferMetaInfo.h and the BMM export headers")],
    "FLASHINFER_CUTLASS@10": [("fused_moe_100", "flashinfer.jit.fused_moe:gen_cutlass_fused_moe_sm100_module", None)],
    "FLASHINFER_CUTLASS@12": [("fused_moe_120", "flashinfer.jit.fused_moe:gen_cutlass_fused_moe_sm120_module", None)],
    "sampler": [("sampling", "flashinfer.jit.sampling:gen_sampling_module", None)],  # VLLM_USE_FLASHINFER_SAMPLER=1
}


def has(pt: ProveTarget, candidates: tuple[str, ...]) -> str | None:
    """The first of `candidates` the image's runtime installs: an apt package, or a CUDA wheel of its lock."""
    return next((p for p in (*pt.runtime_packages, *pt.cuda_wheels) if p.split("==")[0] in candidates), None)


def c_launcher(report: Report, env: Env, pt: ProveTarget, work: Path) -> None:
    name = "runtime.triton-launcher"
    cc, headers = has(pt, C_COMPILERS), has(pt, (f"python{pt.python}-dev", f"libpython{pt.python}-dev"))
    missing = [what for what, ok in ((f"a C compiler ({'/'.join(C_COMPILERS[:2])})", cc),
                                     (f"Python.h (python{pt.python}-dev)", headers)) if not ok]
    if missing:
        report.add(name, False, f"the image's runtime packages lack {' and '.join(missing)}: Triton cannot build its "
                   "launcher on first use, so the first request fails")
        return
    include, suffix = subprocess.run(  # the image's CPython: its headers and its extension suffix
        [str(env.python), "-c", "import sysconfig as s; print(s.get_paths()['include'], s.get_config_var('EXT_SUFFIX'))"],
        capture_output=True, text=True).stdout.split()
    src, out = work / "dsv4_launcher.c", work / f"dsv4_launcher{suffix}"
    src.write_text(LAUNCHER_C)
    cmd = ["cc", "-O2", "-shared", "-fPIC", f"-I{include}", f"-I{env.cuda_home / 'include'}", str(src), "-o", str(out),
           f"-L{env.stub_dir}", "-lcuda"]
    built = subprocess.run(cmd, capture_output=True, text=True)
    loaded = built.returncode == 0 and subprocess.run(
        [str(env.python), "-c", "import dsv4_launcher; print(dsv4_launcher.launch())"], cwd=work,
        env=env.run_env(), capture_output=True, text=True)
    ok = bool(loaded) and loaded.returncode == 0 and loaded.stdout.strip() == "34"
    report.add(name, ok, f"image has {cc} and {headers}; executed here with the host's cc against Python.h of CPython "
               f"{pt.python}: " + ("built, imported, cuInit answered 34 (our stub)" if ok else
                                   (built.stderr or (loaded.stderr if loaded else "")).strip()[-300:]))


def nvcc_host_compiler(report: Report, env: Env, pt: ProveTarget, work: Path, gencode: str) -> None:
    name = "runtime.nvcc-host-compiler"
    cxx, nvcc = has(pt, CXX_COMPILERS), has(pt, NVCC)
    missing = [what for what, ok in (("a host C++ compiler (build-essential/g++)", cxx),
                                     ("nvcc (cuda-nvcc-13-0, or the nvidia-cuda-nvcc wheel)", nvcc))
               if not ok]
    if missing:
        report.add(name, False, f"the image's runtime packages lack {' and '.join(missing)}: nvcc cannot compile "
                   "FlashInfer's or DeepGEMM's JIT kernels (it runs a host compiler even for device code)")
        return
    src = work / "trivial.cu"
    src.write_text(TRIVIAL_CU)
    built = subprocess.run([str(env.tool("nvcc")), "-ccbin", "g++", "-std=c++20", "-gencode", gencode, str(src), "-o",
                            str(work / "trivial")], capture_output=True, text=True, env=env.run_env())
    report.add(name, built.returncode == 0, f"image has {nvcc} and {cxx}; executed here: nvcc {gencode} with the "
               "host's g++ " + ("compiled and linked a trivial .cu" if built.returncode == 0 else
                               f"failed: {built.stderr.strip()[-300:]}"))


def flashinfer_modules(report: Report, env: Env, pt: ProveTarget, backends: dict, capability: str) -> None:
    """The modules vLLM's resolved backends load from FlashInfer, named by FlashInfer's own JIT specs."""
    major = capability.split(".")[0]
    moe = backends.get("nvfp4_moe_first_supported")
    keys = [backends.get("attention"), moe if moe != "FLASHINFER_CUTLASS" else f"{moe}@{major}", "sampler"]
    wanted = [m for key in keys for m in FLASHINFER.get(key or "", [])]
    specs = spec_names(env, pt, [m[1] for m in wanted if m[1]])
    for module, gen, download in wanted:
        prebuilt = module in pt.flashinfer_prebuilt
        what = f"FlashInfer's JIT spec {specs[gen]['name']}: {specs[gen]['sources']} sources" if gen and gen in specs else \
            (f"FlashInfer spec {gen}: {specs.get('error')}" if gen else
             "FlashInfer JIT module (spec not generated here: generating it already downloads, see the fetch line)")
        report.add(f"runtime.flashinfer.{module}@{capability}", prebuilt,
                   f"needed for {'/'.join(k for k in keys if k and any(x[0] == module for x in FLASHINFER.get(k, [])))}; "
                   f"{what}; " + ("prebuilt in the image" if prebuilt else
                                  f"not prebuilt: JIT-compiled by nvcc on the first request "
                                  f"(FLASHINFER_CUDA_ARCH_LIST={pt.flashinfer_cuda_arch_list})"))
        if download:
            report.add(f"runtime.fetch.flashinfer-cubins.{module}@{capability}", pt.flashinfer_cubins_baked,
                       f"first use downloads {download} from FLASHINFER_CUBINS_REPOSITORY "
                       "(https://edge.urm.nvidia.com/artifactory/..., flashinfer/jit/cubin_loader.py) into "
                       "~/.cache/flashinfer/cubins" + (": baked into the image" if pt.flashinfer_cubins_baked else
                                                       ": not baked, so an offline cluster fails and every new "
                                                       "container downloads again"))


def spec_names(env: Env, pt: ProveTarget, gens: list[str]) -> dict:
    """Ask FlashInfer for its JIT specs (name and sources; nothing is compiled)."""
    script = ("import importlib, json, sys\nout = {}\nfor g in sys.argv[1:]:\n    m, f = g.split(':')\n"
              "    s = getattr(importlib.import_module(m), f)()\n    out[g] = {'name': s.name, 'sources': len(s.sources)}\n"
              "print(json.dumps(out))")
    run_env = {**env.run_env(), "FLASHINFER_CUDA_ARCH_LIST": pt.flashinfer_cuda_arch_list}
    result = subprocess.run([str(env.python), "-c", script, *gens], env=run_env, capture_output=True, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:200]}


def fetches(report: Report, pt: ProveTarget) -> None:
    model = json.loads(pt.serve_defaults.read_text())["serve"]["model"]
    report.add("runtime.fetch.huggingface", None,
               f"MODEL={model} is a Hub repo id: the first start downloads its config, tokenizer, safetensors index and "
               "35 shards (172 GB) unless the Hugging Face cache is mounted (README: -v ~/.cache/huggingface:...) or "
               "MODEL is a local path; the entrypoint's preflight reads config.json and the index from the Hub")


def overlapping_files(report: Report, env: Env) -> None:
    """Two packages of the lock shipping the same files: what the image holds depends on install order.
    A FAIL inside a Python package; INFO for a loose top-level file (a build backend shipped by mistake)."""
    found = env.overlaps()
    if not found:
        report.add("runtime.overlapping-files", True, "no two runtime packages ship the same file")
    for group in found:
        in_package = "/" in group["example"]
        report.add(f"runtime.overlapping-files.{'+'.join(d.split('==')[0] for d in group['dists'])}",
                   False if in_package else None,
                   f"{' and '.join(group['dists'])} ship {group['files']} files with different contents (e.g. "
                   f"{group['example']}): pip installs {group['pip_winner']} last, so its files win (prove's env "
                   "does the same)" + ("; an installer with another order gets the other's, and a uv install here "
                                       "once broke vLLM's imports that way (cuda.bindings.runtime without "
                                       "cudaLibrary_t)" if in_package else "; a loose top-level file"))


def pip_check(report: Report, env: Env) -> None:
    result = subprocess.run([_uv(), "pip", "check", "--python", str(env.python)], capture_output=True, text=True)
    lines = [ln.strip() for ln in (result.stdout + result.stderr).splitlines() if "requires" in ln or "incompatible" in ln]
    report.add("runtime.pip-check", result.returncode == 0,
               "uv pip check: the runtime lock plus the vLLM wheel is consistent" if result.returncode == 0 else
               "uv pip check: " + "; ".join(lines[:3]))
