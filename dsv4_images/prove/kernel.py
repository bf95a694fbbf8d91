"""One real kernel compiled for the target's gencode with vLLM's own compile command (the object's
rule in the build.ninja vLLM's configure generated), then cuobjdump proves which SASS it holds."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .archs import Configured
from .env import Env
from .report import Report, StepFailed
from .settings import ProveTarget

ELF_ARCH = re.compile(r"^arch = (sm_\d+[af]?)$", re.M)  # the cubin's own header (its file name drops the f)
PTX_ARCH = re.compile(r"\.(sm_\d+[af]?|compute_\d+[af]?)\.ptx")


def object_for(env: Env, build: Path, source: str) -> str:
    targets = subprocess.run([str(env.ninja), "-C", str(build), "-t", "targets", "all"], capture_output=True,
                             text=True).stdout
    found = [line.split(":")[0] for line in targets.splitlines() if line.split(":")[0].endswith(f"/{source}.o")]
    if not found:
        raise StepFailed(f"vLLM's build.ninja has no object for {source} (is it in the target's kernel groups?)")
    return found[0]


def compile_one(report: Report, env: Env, pt: ProveTarget, configured: Configured) -> Path:
    obj = object_for(env, configured.build, pt.kernel.source)
    command = subprocess.run([str(env.ninja), "-C", str(configured.build), "-t", "commands", obj],
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
    gencode = " ".join(re.findall(r"-gencode[ =](\S+)", command))
    started = time.monotonic()
    result = subprocess.run(["nice", "-n", "10", str(env.ninja), "-C", str(configured.build), obj],
                            env=env.run_env(), capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        error = next((ln for ln in result.stdout.splitlines() if " error" in ln), result.stdout.strip()[-300:])
        raise StepFailed(f"nvcc failed on {pt.kernel.source}: {error[:300]}")
    report.add("kernel.compile", True, f"{pt.kernel.source} compiled by vLLM's own build rule (nvcc {nvcc_version(env)}, "
               f"-gencode {gencode}) in {seconds:.0f} s")
    report.facts["kernel"] = {"object": obj, "command": command, "seconds": round(seconds, 1)}
    return configured.build / obj


def nvcc_version(env: Env) -> str:
    out = subprocess.run([str(env.tool("nvcc")), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"V(\d+\.\d+\.\d+)", out)
    return found.group(1) if found else "?"


def sass_in(env: Env, obj: Path) -> tuple[list[str], list[str]]:
    """The SASS (ELF cubin) and PTX architectures cuobjdump lists in an object or library."""
    elf = subprocess.run([str(env.tool("cuobjdump")), "-elf", str(obj)], capture_output=True, text=True)
    ptx = subprocess.run([str(env.tool("cuobjdump")), "-lptx", str(obj)], capture_output=True, text=True)
    if elf.returncode != 0 and "does not contain" not in elf.stderr + elf.stdout:
        raise StepFailed(f"cuobjdump could not read {obj.name}: {(elf.stderr or elf.stdout).strip()[:200]}")
    return sorted(set(ELF_ARCH.findall(elf.stdout))), sorted(set(PTX_ARCH.findall(ptx.stdout)))


def judge_sass(report: Report, env: Env, obj: Path, want: str, name: str = "kernel.sass") -> None:
    sass, ptx = sass_in(env, obj)
    ok = sass == [want] and not ptx
    report.add(name, ok, f"cuobjdump: {obj.name} holds SASS {', '.join(sass) or 'none'}"
               + (f" and PTX {', '.join(ptx)}" if ptx else ", no PTX") + f" (want only {want})")
