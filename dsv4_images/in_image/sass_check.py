#!/usr/bin/env python3
"""Check the GPU code in vLLM's compiled extensions with cuobjdump (stdlib only; the build stages run it
on the wheel they are about to install, whichever way it came).

    sass_check.py WHEEL_OR_DIR --runs-on 10.0 10.3 [--require vllm/_C_stable_libtorch.abi3.so ...]

Fails the build (exit 1, one `error:` line per finding) when
  - a required extension is missing, holds no device code, or holds no SASS that runs on one of the
    compute capabilities: PTX does not count (a driver JIT from PTX is slow at first use and is the
    fallback that once corrupted tokens on SM 12.0);
  - any extension holds a cubin for one of the target's majors that runs on only some of its compute
    capabilities: sm_100a in an image for 10.0 and 10.3 is what a list with both 10.0 and 10.0a produced,
    kernels that fail on B300 (vllm#56548).
Prints what each extension holds. Exit 2 when it cannot judge: no cuobjdump, an unreadable input, or
cuobjdump output it does not understand (its -res-usage blocks must match its -lelf listing).

Compatibility rules (CUDA's): a cubin for sm_XY runs on X.Z for every Z >= Y; one for sm_XYf (family)
likewise; one for sm_XYa only on X.Y itself. cuobjdump's -lelf names drop the "f", -res-usage keeps it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ARCH = re.compile(r"^sm_(\d+)(\d)([af]?)$")
NO_DEVICE_CODE = "does not contain device code"


class CannotJudge(Exception):
    pass


def parse_arch(arch: str) -> tuple[int, int, str]:
    m = ARCH.match(arch)
    if not m:
        raise CannotJudge(f"unknown architecture name {arch!r} in cuobjdump's output")
    return int(m.group(1)), int(m.group(2)), m.group(3)


def parse_cc(cc: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d)", cc.strip())
    if not m:
        raise CannotJudge(f"not a compute capability: {cc!r} (expected e.g. 10.0)")
    return int(m.group(1)), int(m.group(2))


def cubin_runs_on(arch: str, cc: tuple[int, int]) -> bool:
    major, minor, suffix = parse_arch(arch)
    if suffix == "a":
        return cc == (major, minor)
    return cc[0] == major and cc[1] >= minor


def ptx_runs_on(arch: str, cc: tuple[int, int]) -> bool:
    """PTX is JIT-compiled by the driver: generic PTX for any later compute capability."""
    major, minor, suffix = parse_arch(arch)
    if suffix:
        return cubin_runs_on(arch, cc)
    return cc >= (major, minor)


def parse_res_usage(text: str) -> list[tuple[str, str]]:
    """(kind, arch) per fatbin entry of `cuobjdump -res-usage`: kind is "elf" (SASS) or "ptx"."""
    entries, kind = [], None
    for line in text.splitlines():
        if line.startswith("Fatbin elf code:"):
            kind = "elf"
        elif line.startswith("Fatbin ptx code:"):
            kind = "ptx"
        elif line.startswith("arch = ") and kind:
            entries.append((kind, line.split("=", 1)[1].strip()))
            kind = None
    return entries


def count_listed_elf(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("ELF file"))


def _cuobjdump(cuobjdump: str, option: str, path: Path) -> str | None:
    """cuobjdump's output, or None for a file without device code."""
    result = subprocess.run([cuobjdump, option, str(path)], capture_output=True, text=True, errors="replace")
    if NO_DEVICE_CODE in result.stderr + result.stdout:
        return None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CannotJudge(f"cuobjdump {option} {path.name} failed (exit {result.returncode}): {last}")
    return result.stdout


def device_code(cuobjdump: str, path: Path) -> list[tuple[str, str]]:
    usage = _cuobjdump(cuobjdump, "-res-usage", path)
    if usage is None:
        return []
    entries = parse_res_usage(usage)
    listed = count_listed_elf(_cuobjdump(cuobjdump, "-lelf", path) or "")
    if listed != sum(1 for kind, _ in entries if kind == "elf"):
        raise CannotJudge(f"{path.name}: cuobjdump -lelf lists {listed} ELF files but -res-usage describes "
                          f"{sum(1 for kind, _ in entries if kind == 'elf')}: output format not understood")
    return entries


def judge(extensions: dict[str, list[tuple[str, str]]], runs_on: list[str], required: list[str]) -> list[str]:
    """The findings that fail the build (empty: it passes)."""
    ccs = [parse_cc(cc) for cc in runs_on]
    errors = []
    for name in required:
        if name not in extensions:
            errors.append(f"{name} is missing")
            continue
        cubins = [arch for kind, arch in extensions[name] if kind == "elf"]
        if not extensions[name]:
            errors.append(f"{name} holds no device code")
            continue
        for cc, text in zip(ccs, runs_on):
            if not any(cubin_runs_on(arch, cc) for arch in cubins):
                held = ", ".join(sorted(set(cubins))) or "no SASS"
                errors.append(f"{name} has no SASS that runs on compute capability {text} (it holds {held})")
    for name, entries in sorted(extensions.items()):
        for arch in sorted({arch for kind, arch in entries if kind == "elf"}):
            major = parse_arch(arch)[0]
            family = [(cc, text) for cc, text in zip(ccs, runs_on) if cc[0] == major]
            misses = [text for cc, text in family if not cubin_runs_on(arch, cc)]
            if family and misses:
                covers = [text for cc, text in family if cubin_runs_on(arch, cc)] or ["none of them"]
                errors.append(f"{name} holds {arch} code, which runs on {', '.join(covers)} but not on "
                              f"{', '.join(misses)}: a wrong arch slipped into the build (see vllm#56548)")
    return errors


def summary(name: str, entries: list[tuple[str, str]], ccs: list[str]) -> str:
    if not entries:
        return f"{name}: no device code"
    parts = []
    for kind, label in (("elf", "SASS"), ("ptx", "PTX")):
        archs = [arch for k, arch in entries if k == kind]
        if archs:
            parts.append(label + " " + ", ".join(f"{a} x{archs.count(a)}" for a in sorted(set(archs))))
    runs = []
    for text in ccs:
        cc = parse_cc(text)
        if any(cubin_runs_on(a, cc) for k, a in entries if k == "elf"):
            runs.append(f"{text} SASS")
        elif any(ptx_runs_on(a, cc) for k, a in entries if k == "ptx"):
            runs.append(f"{text} PTX only")
        else:
            runs.append(f"{text} none")
    return f"{name}: {'; '.join(parts)} -> {', '.join(runs)}"


def extensions_in(source: Path, workdir: Path) -> dict[str, Path]:
    """Extension name (its path in the wheel, or below the directory) -> a file to run cuobjdump on."""
    if source.is_dir():
        return {p.relative_to(source).as_posix(): p for p in sorted(source.rglob("*.so"))}
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(".so")]
            wheel.extractall(workdir, members=names)
        return {n: workdir / n for n in sorted(names)}
    if source.is_file():
        return {source.name: source}
    raise CannotJudge(f"{source}: no such wheel, directory or file")


def find_cuobjdump(given: str | None) -> str:
    if given:
        if not os.access(given, os.X_OK):
            raise CannotJudge(f"{given} is not an executable cuobjdump")
        return given
    for candidate in (shutil.which("cuobjdump"), os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"),
                                                            "bin", "cuobjdump")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CannotJudge("cuobjdump not found (install the CUDA toolkit's cuobjdump, or pass --cuobjdump)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("source", type=Path, help="a wheel, a directory of extensions, or one extension")
    parser.add_argument("--runs-on", nargs="+", required=True, metavar="CC", help="compute capabilities, e.g. 10.0 10.3")
    parser.add_argument("--require", nargs="*", default=[], metavar="NAME", help="extensions that must hold SASS for each")
    parser.add_argument("--cuobjdump", help="the cuobjdump to run (default: PATH, then $CUDA_HOME/bin)")
    args = parser.parse_args(argv)
    try:
        cuobjdump = find_cuobjdump(args.cuobjdump)
        for cc in args.runs_on:
            parse_cc(cc)
        with tempfile.TemporaryDirectory(prefix="sass-check-") as tmp:
            files = extensions_in(args.source, Path(tmp))
            found = {name: device_code(cuobjdump, path) for name, path in files.items()}
        for name, entries in found.items():
            print(summary(name, entries, args.runs_on))
        errors = judge(found, args.runs_on, args.require)
    except CannotJudge as exc:
        print(f"error: sass check cannot judge {args.source}: {exc}", file=sys.stderr)
        return 2
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return 1
    print(f"sass check: {len(found)} extensions, each of {len(args.require)} required ones holds SASS for "
          f"{', '.join(args.runs_on)}, no partial-arch code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
