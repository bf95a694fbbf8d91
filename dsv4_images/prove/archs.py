"""The kernel arch table: vLLM's own CMake configure of the pinned sdist for the target's
TORCH_CUDA_ARCH_LIST, with the PyPI CUDA toolchain and the venv's torch, recording every arch list
vLLM's CMakeLists.txt computes (a variable_watch on each cuda_archs_loose_intersection output,
injected with CMAKE_PROJECT_INCLUDE; vLLM's files are not edited for that).

vLLM's CMakeLists.txt ends with its external projects (triton_kernels, DeepGEMM, DeepSelect,
FlashMLA, ...), each fetched from GitHub, and a GCC >= 13 check before them. Neither exists here, so
the configure runs on a copy of CMakeLists.txt cut just before that section: every line up to the
cut is vLLM's, byte for byte, and holds every arch decision of vLLM's own kernels (checked). The
configure then completes and generates vLLM's build.ninja, which kernel.py compiles one object of.

CMake's external projects are fed from PyPI only: CUTLASS is the copy bundled in the
flashinfer-python wheel (4.5.0; vLLM 0.33.0 pins v4.7.1), through vLLM's VLLM_CUTLASS_SRC_DIR.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..sources import extract, fetch_sdist
from .env import Env
from .report import Report, StepFailed
from .settings import ProveTarget

CUT_MARKER = "# For CUDA and HIP builds also build the triton_kernels external package."
ARCH_CALL = re.compile(r"cuda_archs_loose_intersection\(\s*(\w+)")
WATCH_LINE = re.compile(r"^-- \[dsv4-prove\] (\w+) = '(.*)'$")
VLLM_DECISION = re.compile(r"^-- ((?:Not b|B)uilding .*)$")
EXPECTED_FAILURE = "GCC >= 13 is required to build vLLM with CUDA"


@dataclass(frozen=True)
class Configured:
    source: Path  # the configured vLLM tree (Marlin sources generated into it)
    build: Path   # its build directory, holding vLLM's build.ninja
    table: list[tuple[str, str]]
    cutlass: str


def watch_include(names: list[str]) -> str:
    lines = ["# written by dsv4_images/prove/archs.py: report every arch list vLLM computes",
             "function(_dsv4_prove_arch var access value)",
             '  if(access STREQUAL "MODIFIED_ACCESS")',
             "    message(STATUS \"[dsv4-prove] ${var} = '${value}'\")",
             "  endif()",
             "endfunction()"]
    lines += [f"variable_watch({name} _dsv4_prove_arch)" for name in names]
    return "\n".join(lines) + "\n"


def cut_cmakelists(source: Path) -> tuple[int, list[str]]:
    """Cut CMakeLists.txt before its external projects; returns (lines kept, arch variables)."""
    path = source / "CMakeLists.txt"
    text = path.read_text()
    if text.count(CUT_MARKER) != 1:
        raise StepFailed(f"vLLM's CMakeLists.txt no longer has the line {CUT_MARKER!r} prove cuts at")
    kept, rest = text.split(CUT_MARKER)
    if ARCH_CALL.search(rest):
        raise StepFailed("vLLM's CMakeLists.txt computes arch lists after the external-projects cut; prove's table "
                         "would be incomplete")
    path.write_text(kept)
    names = ["CUDA_ARCHS", *dict.fromkeys(ARCH_CALL.findall(kept))]
    return kept.count("\n"), names


def table_from(output: str) -> list[tuple[str, str]]:
    """Every arch list vLLM assigns, in configure order, as (variable, archs), with vLLM's own
    "Building ..." / "Not building ..." lines kept in place as (">", message); a repeated
    assignment of the same value is collapsed."""
    rows: list[tuple[str, str]] = []
    for line in output.splitlines():
        watched, decision = WATCH_LINE.match(line), VLLM_DECISION.match(line)
        if watched:
            row = (watched.group(1), watched.group(2) or "-")
            if not rows or rows[-1] != row:
                rows.append(row)
        elif decision and rows:
            rows.append((">", decision.group(1)))
    return rows


def render(pt: ProveTarget, table: list[tuple[str, str]], cutlass: str) -> str:
    head = [f"# vLLM {pt.vllm_version} kernel groups for TORCH_CUDA_ARCH_LIST={pt.torch_cuda_arch_list} with CUDA "
            f"{pt.cuda.rsplit('.', 1)[0]} (nvcc from PyPI), as vLLM's own CMakeLists.txt computes them, in order.",
            f"# Written by `python build.py prove --arch {pt.name} --write-archs`; prove fails when it computes "
            "anything else.",
            f"# CUTLASS at configure time: {cutlass}. Lines: CMake variable and arch list ('-' = none);",
            "# '>' lines are vLLM's own messages, where it prints them."]
    width = max(len(name) for name, _ in table if name != ">")
    body = [f"  > {value}" if name == ">" else f"{name:<{width}}  {value}" for name, value in table]
    return "\n".join(head + body) + "\n"


def configure(report: Report, env: Env, pt: ProveTarget, work: Path, progress=print) -> Configured:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = extract(fetch_sdist(pt.target, progress), work)
    kept, names = cut_cmakelists(source)
    include = work / "dsv4_prove_watch.cmake"
    include.write_text(watch_include(names))
    cutlass_dir = env.site_packages / "flashinfer" / "data" / "cutlass"
    version = re.findall(r"#define CUTLASS_(MAJOR|MINOR|PATCH) (\d+)",
                         (cutlass_dir / "include" / "cutlass" / "version.h").read_text())
    cutlass = "flashinfer-python's bundled copy, " + ".".join(v for _, v in version) + " (vLLM pins v4.7.1)"
    build = work / "build"
    build.mkdir()
    run_env = {**env.run_env(), "TORCH_CUDA_ARCH_LIST": pt.torch_cuda_arch_list, "VLLM_TARGET_DEVICE": "cuda",
               "VLLM_CUTLASS_SRC_DIR": str(cutlass_dir)}
    python_path = subprocess.run([str(env.python), "-c", "import sys; print(':'.join(sys.path))"],
                                 capture_output=True, text=True, env=run_env).stdout.strip()
    cmd = [str(env.cmake), str(source), "-G", "Ninja", f"-DCMAKE_BUILD_TYPE={pt.build_type}", "-DVLLM_TARGET_DEVICE=cuda",
           f"-DVLLM_PYTHON_EXECUTABLE={env.python}", f"-DVLLM_PYTHON_PATH={python_path}",
           f"-DFETCHCONTENT_BASE_DIR={build / '_deps'}", "-DFETCHCONTENT_FULLY_DISCONNECTED=ON", "-DNVCC_THREADS=1",
           "-DCMAKE_JOB_POOL_COMPILE:STRING=compile", "-DCMAKE_JOB_POOLS:STRING=compile=1",
           f"-DCMAKE_CUDA_COMPILER={env.tool('nvcc')}", f"-DCMAKE_MAKE_PROGRAM={env.ninja}",
           f"-DCMAKE_PROJECT_INCLUDE={include}"]
    result = subprocess.run(cmd, cwd=build, env=run_env, capture_output=True, text=True)
    (work / "configure.log").write_text(result.stdout + result.stderr)
    errors = [ln.strip() for ln in result.stderr.splitlines() if "CMake Error" in ln]
    if result.returncode != 0:
        detail = " ".join(result.stderr.split("CMake Error", 1)[-1].split())[:300] if errors else result.stderr[-300:]
        raise StepFailed(f"vLLM's CMake configure failed (its log is kept as last-run-{pt.name}/cmake/configure.log in "
                         f"{work.parent.parent}): CMake Error{detail}")
    report.add("archs.configure", True, f"vLLM {pt.vllm_version} CMakeLists.txt lines 1-{kept} configured and generated "
               f"({pt.build_type}, TORCH_CUDA_ARCH_LIST={pt.torch_cuda_arch_list}, host {host_compiler(result.stdout)}); "
               f"cut before triton_kernels and the GitHub-fetched external projects (and vLLM's GCC >= 13 check); "
               f"CUTLASS: {cutlass}")
    return Configured(source, build, table_from(result.stdout), cutlass)


def host_compiler(output: str) -> str:
    found = re.search(r"The CXX compiler identification is (.+)", output)
    return found.group(1).strip() if found else "C++ compiler ?"


def judge(report: Report, pt: ProveTarget, configured: Configured, write: bool = False) -> None:
    text = render(pt, configured.table, configured.cutlass)
    committed = pt.archs_file.read_text() if pt.archs_file.is_file() else ""
    if write and text != committed:
        pt.archs_file.parent.mkdir(exist_ok=True)
        pt.archs_file.write_text(text)
        committed = text
    new_rows = {f"{n}={a}" for n, a in configured.table if n != ">"}
    old_rows = {"=".join(ln.split()[:2]) for ln in committed.splitlines() if ln[:1] not in ("", "#", " ")}
    changed = sorted(new_rows ^ old_rows)
    report.add("archs.table", text == committed,
               f"{sum(n != '>' for n, _ in configured.table)} arch lists match {pt.archs_file.name}" if text == committed else
               f"differs from {pt.archs_file.name} (run prove --write-archs to accept): {', '.join(changed[:8]) or 'messages'}")
    family = family_arch(pt.kernel.sass)
    groups = [f"{n}={a}" for n, a in configured.table if n != ">" and family in a.split(";")]
    report.add(f"archs.{pt.kernel.archs}", any(g.startswith(pt.kernel.archs + "=") for g in groups),
               f"{family} (native {pt.kernel.sass}) in: {', '.join(groups) or 'no group'}")


def family_arch(sass: str) -> str:
    """sm_120f -> 12.0f, sm_100f -> 10.0f."""
    digits = re.match(r"sm_(\d+)(\d)([af]?)$", sass)
    return f"{digits.group(1)}.{digits.group(2)}{digits.group(3)}"
