"""`build.py prove --arch ARCH [--report FILE]`: execute what can be executed of the sm images' claims
on a machine without a GPU, as named PASS/FAIL lines; exit 0 only when every line passes."""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

from .. import inputs, references
from ..errors import UserError
from . import archs, engine, env, image, kernel, runtime
from .report import Report
from .settings import CACHE_DIR, ProveTarget, from_target

STEPS = ("env", "engine", "archs", "kernel", "runtime", "image")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, type=inputs.flag(inputs.word), help="sm100 or sm120 (or an alias)")
    p.add_argument("--report", type=inputs.flag(inputs.writable_file),
                   help="also write the report as JSON to this file (checked writable before anything runs)")
    p.add_argument("--steps", help=f"comma-separated subset of {','.join(STEPS)} (default: all but image; with "
                                   "--image: env,engine,image)")
    p.add_argument("--image", type=inputs.flag(image_reference),
                   help="a built image of the target: run the engine step and the image checks in its containers too "
                        "(no GPU, no network, an arbitrary UID) and require it to agree with the venv")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an entrypoint override to check as 'your settings' (repeatable)")
    p.add_argument("--write-archs", action="store_true", help="accept the computed table into archs/<target>.txt")
    p.add_argument("args", nargs="*", help="after --: extra `vllm serve` arguments to check as 'your settings'")


def image_reference(text: str) -> str:
    """A local image: a reference Docker reads (name[:tag][@digest]) or an image ID (sha256:...)."""
    if re.fullmatch(r"sha256:[0-9a-f]{64}", text):
        return text
    try:
        references.parse(text)
    except ValueError as exc:
        raise ValueError(f"{inputs.shown(text)} is not an image reference: {exc}") from None
    return text


def parse_env(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            raise UserError(f"--env {item[:80]!r}: expected KEY=VALUE with an upper-case variable name", exit_code=2)
        out[key] = value
    return out


def run(pt: ProveTarget, steps: list[str], emit=print, user_env: dict | None = None, user_args: list | None = None,
        write_archs: bool = False, image_ref: str | None = None, target=None) -> Report:
    report = Report(pt.name, emit=emit)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"run-{pt.name}-", dir=CACHE_DIR))  # concurrent runs do not collide
    try:
        steps_in(report, pt, steps, work, emit, user_env, user_args, write_archs)
        if "image" in steps:
            with report.step("image"):
                in_image(report, pt, target, image_ref, work / "image", report.facts.get("engine"), user_env, user_args)
    finally:  # keep the latest run's logs and build tree for a look, replace the one before
        last = CACHE_DIR / f"last-run-{pt.name}"
        shutil.rmtree(last, ignore_errors=True)
        work.rename(last)
        report.facts["work_dir"] = str(last)
    return report


def steps_in(report: Report, pt: ProveTarget, steps: list[str], work: Path, emit, user_env, user_args,
             write_archs: bool) -> None:
    with report.step("env"):
        environment = env.ensure(pt, progress=emit)
        report.add("env", True, f"{'built' if environment.built_now else 'cached'} {environment.root.name}: "
                   f"{pt.runtime_lock.name} + {pt.prove_lock.name} ({pt.vllm_version} wheel, CUDA {pt.cuda} toolchain), "
                   f"{len(pt.patches)} patches applied, our libcuda stub")
    results = {}
    if "engine" in steps:
        with report.step("engine"):
            engine.entrypoint_refuses(report, pt)
            results = engine.run(report, environment, pt, engine.cases(pt, user_env, user_args), work)
    configured = None
    if "archs" in steps or "kernel" in steps:
        with report.step("archs"):
            configured = archs.configure(report, environment, pt, work / "cmake", progress=emit)
            archs.judge(report, pt, configured, write=write_archs)
    if "kernel" in steps and configured is not None:
        with report.step("kernel"):
            obj = kernel.compile_one(report, environment, pt, configured)
            kernel.judge_sass(report, environment, obj, pt.kernel.sass)
    if "runtime" in steps:
        with report.step("runtime"):
            scratch = work / "runtime"
            scratch.mkdir(exist_ok=True)
            runtime.c_launcher(report, environment, pt, scratch)
            runtime.nvcc_host_compiler(report, environment, pt, scratch, gencode_of(pt))
            for capability, result in results.items():
                if "error" not in result.get("backends", {"error": 1}):
                    runtime.flashinfer_modules(report, environment, pt, result["backends"], capability)
            if not results:
                report.add("runtime.flashinfer", None, "needs the engine step (vLLM's resolved backends)")
            runtime.fetches(report, pt)
            runtime.overlapping_files(report, environment)
            runtime.pip_check(report, environment)


def in_image(report: Report, pt: ProveTarget, target, image_ref: str, work: Path, venv_results: dict | None,
             user_env, user_args) -> None:
    """The built image, in containers: the entrypoint, the image checks, and the engine step compared."""
    environment = env.ensure(pt)  # the env step's, from its cache: the pristine files the worker compares with
    image_env, mounts = image.prepare(environment, image_ref, pt, work)
    image.entrypoint(report, image_ref, pt, mounts)
    image.image_checks(report, image_ref, pt, target, mounts)
    if venv_results is not None:
        scratch = Report(pt.name, emit=lambda line: None)  # its lines would repeat the venv's: compared below instead
        results = engine.run(scratch, image_env, pt, engine.cases(pt, user_env, user_args), work,
                             locate=mounts.inside)
        image.agreement(report, venv_results, results, mounts)


def gencode_of(pt: ProveTarget) -> str:
    """sm_120f -> arch=compute_120f,code=sm_120f"""
    return f"arch={pt.kernel.sass.replace('sm_', 'compute_')},code={pt.kernel.sass}"


def main(target, args, emit=print) -> int:
    pt = from_target(target)
    default = "env,engine,image" if args.image else ",".join(s for s in STEPS if s != "image")
    steps = [s.strip() for s in (default if args.steps is None else args.steps).split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown or not steps:
        raise UserError(f"--steps {(args.steps or '')[:80]!r}: expected a comma-separated subset of {', '.join(STEPS)}",
                        exit_code=2)
    if ("image" in steps) != bool(args.image):
        raise UserError("prove: the image step needs --image IMAGE, and --image needs the image step", exit_code=2)
    user_env = parse_env(args.env)
    report = run(pt, steps, emit, user_env, args.args, args.write_archs, args.image, target)
    emit(report.table())
    if args.report:
        args.report.write_text(report.as_json())
        emit(f"report: {args.report}")
    return 0 if report.ok else 1
