"""FlashInfer prebuilt for one image: fetch the trtllm-gen cubins it needs, build its JIT modules ahead of time,
package them as a `flashinfer-jit-cache` distribution FlashInfer discovers, and check that it does.

Runs inside the image build (stdlib + the image's own FlashInfer, imported only where needed); the module list,
arch list and cubin pins come from matrix.toml through the rendered Dockerfile. How FlashInfer 0.7.2.post1
finds prebuilt modules (flashinfer/jit/env.py): an importable `flashinfer_jit_cache` whose `__version__` is
FlashInfer's version (a `+local` suffix allowed) and whose `get_jit_cache_providers()` returns providers, each
with a version equal to the shim's, a directory holding `<module>/<module>.so`, the module names and the CUDA
architectures they were compiled for; `JitSpecNvcc.try_load` then loads the .so instead of compiling.

    fetch-cubins --repository URL --out DIR --package NAME PATH SHA256 ...
    build --arch-list "12.0f" --provider sm120 --build-dir DIR --wheel-dir DIR --job-gib 8 --module NAME=GENERATOR ...
    check --device-arch 12.0f [--load] --module NAME=GENERATOR ...
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib
import json
import os
import resource
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

DISTRIBUTION = "flashinfer-jit-cache"  # what FlashInfer's version check and vLLM's kernel check look for
PACKAGE = "flashinfer_jit_cache"
WHEEL_DATE = (1980, 1, 1, 0, 0, 0)  # fixed zip timestamps: the wheel's bytes depend only on its contents


class AotError(Exception):
    """One line for the build log; the build fails with it."""


# ---- cubins -------------------------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse_checksums(text: str) -> list[tuple[str, str]]:
    """checksums.txt: `<sha256> <relative path>` per line (FlashInfer's format, flashinfer/jit/cubin_loader.py)."""
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
            raise AotError(f"checksums.txt line {n} is not '<sha256> <file>': {line[:120]!r}")
        name = PurePosixPath(parts[1])
        if name.is_absolute() or ".." in name.parts:
            raise AotError(f"checksums.txt line {n} names a file outside its package: {parts[1]!r}")
        entries.append((parts[0], name.as_posix()))
    if not entries:
        raise AotError("checksums.txt lists no files")
    return entries


def _download(url: str, attempts: int = 3) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as exc:
            if attempt == attempts:
                raise AotError(f"cannot download {url}: {exc}") from None
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def _write_verified(path: Path, url: str, sha256: str) -> bool:
    """Make `path` hold the bytes whose sha256 is given; True when it had to download them."""
    if path.is_file() and sha256_bytes(path.read_bytes()) == sha256:
        return False
    data = _download(url)
    if sha256_bytes(data) != sha256:
        raise AotError(f"{url}: sha256 {sha256_bytes(data)}, expected {sha256}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def cubins_for(packages: list[list[str]], needed_by: list[str], selected: list[tuple[str, str]] | None) -> list[tuple]:
    """The packages the selected modules load (all of them when no module list is given)."""
    if selected is None:
        return [tuple(p) for p in packages]
    loaders = {}
    for value in needed_by:
        name, sep, modules = value.partition("=")
        if not sep or not modules:
            raise AotError(f"--needed-by {value!r}: expected PACKAGE=module,module")
        loaders[name] = set(modules.split(","))
    chosen = {name for name, _ in selected}
    unknown = [p[0] for p in packages if p[0] not in loaders]
    if unknown:
        raise AotError(f"cubin package {unknown[0]}: no --needed-by says which modules load it")
    return [tuple(p) for p in packages if loaders[p[0]] & chosen]


def fetch_package(repository: str, out: Path, path: str, checksums_sha256: str, progress=print) -> int:
    """One artifact package into out/<path>: its checksums.txt verified against the pin, then every file it
    lists verified against its line. Returns the number of files."""
    base = repository.rstrip("/") + "/" + path
    manifest = out / path / "checksums.txt"
    _write_verified(manifest, base + "checksums.txt", checksums_sha256)
    entries = parse_checksums(manifest.read_text())
    fetched = sum(_write_verified(out / path / name, base + name, sha) for sha, name in entries)
    size = sum((out / path / name).stat().st_size for _, name in entries)
    progress(f"cubins: {path}: {len(entries)} files verified ({fetched} downloaded, {size / 1e6:.0f} MB)")
    return len(entries)


def check_pins_agree(packages: list[tuple[str, str, str]], artifacts) -> None:
    """The matrix pins must be what the installed FlashInfer itself expects (flashinfer/artifacts.py)."""
    for name, path, sha in packages:
        theirs = (getattr(artifacts.ArtifactPath, name, None), getattr(artifacts.CheckSumHash, name, None))
        if theirs != (path, sha):
            raise AotError(f"cubin package {name}: matrix.toml pins {path} {sha} but the installed FlashInfer "
                           f"expects {theirs[0]} {theirs[1]}: update matrix.toml with FlashInfer")


# ---- building -----------------------------------------------------------------------------------

def parse_modules(values: list[str]) -> list[tuple[str, str]]:
    modules = []
    for value in values:
        name, sep, generator = value.partition("=")
        if not sep or ":" not in generator:
            raise AotError(f"--module {value!r}: expected NAME=package.module:function")
        modules.append((name, generator))
    return modules


FULL_SET = "full"


def select(modules: list[tuple[str, str]], wanted: str, sets: list[str]) -> list[tuple[str, str]]:
    """The modules of the named set: `full` is every --module; `--set NAME=a,b` defines a smaller one (a CI
    build's), which must name modules of the list."""
    named = {FULL_SET: [name for name, _ in modules]}
    for value in sets:
        name, sep, members = value.partition("=")
        if not sep or not name or not members:
            raise AotError(f"--set {value!r}: expected NAME=module,module")
        named[name] = members.split(",")
    if wanted not in named:
        raise AotError(f"module set {wanted!r} is not one of {', '.join(sorted(named))}")
    known = {name for name, _ in modules}
    unknown = [m for m in named[wanted] if m not in known]
    if unknown:
        raise AotError(f"module set {wanted!r} names {', '.join(unknown)}, which no --module defines")
    return [(name, generator) for name, generator in modules if name in named[wanted]]


def make_spec(name: str, generator: str):
    module_name, function = generator.split(":")
    try:
        spec = getattr(importlib.import_module(module_name), function)()
    except (ImportError, AttributeError, RuntimeError, ValueError, AssertionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AotError(f"{generator}: {first}") from None
    if spec.name != name:
        raise AotError(f"{generator} now makes module {spec.name!r}, not {name!r}: update matrix.toml")
    return spec


def parallel_jobs(job_gib: int, meminfo: str | None = None, cpus: int | None = None) -> int:
    """As many compile jobs as cores, but no more than available memory holds at job_gib each (at least one)."""
    meminfo = Path("/proc/meminfo").read_text() if meminfo is None else meminfo
    available_kib = next((int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemAvailable:")), 0)
    return max(1, min(cpus or os.cpu_count() or 1, available_kib // (job_gib * 1024 * 1024)))


def architectures(arch_list: str) -> list[str]:
    """FlashInfer's names for an arch list: "10.0a 10.3a" -> sm100a, sm103a."""
    return [f"sm{a.replace('.', '')}" for a in arch_list.split()]


def ninja_summary(log: str, root: str = "") -> dict[str, tuple[int, float]]:
    """Per module (an output's first path component under `root`, the directory ninja ran in): how many
    outputs ninja built and their summed compile seconds, from a .ninja_log (v5: start ms, end ms, mtime,
    output, hash). FlashInfer's build.ninja names outputs by absolute path, hence `root`. The log keeps each
    output's last build, so after an interrupted build it still holds what the earlier run finished: that is
    what a resumed build skips."""
    prefix = root.rstrip("/") + "/" if root else ""
    out: dict[str, tuple[int, float]] = {}
    for line in log.splitlines():
        parts = line.split("\t")
        if (len(parts) != 5 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[3]
                or int(parts[1]) < int(parts[0])):
            continue  # the "# ninja log v5" header, a line cut short by a kill, or one that makes no sense
        path = parts[3][len(prefix):] if prefix and parts[3].startswith(prefix) else parts[3]
        module = path.lstrip("/").split("/", 1)[0]
        count, seconds = out.get(module, (0, 0.0))
        out[module] = (count + 1, seconds + (int(parts[1]) - int(parts[0])) / 1000)
    return out


def report_ninja_log(jit_dir: Path, progress=print, before: bool = False) -> None:
    """Per module, what ninja's log holds: before the build, what an earlier (perhaps interrupted) build
    left in the cache mount for this one to skip; after it, everything built."""
    try:
        summary = ninja_summary((jit_dir / ".ninja_log").read_text(errors="replace"), str(jit_dir))
    except OSError:
        summary = {}
    if before and not summary:
        progress("aot: the ninja cache holds nothing yet: every output is compiled")
    for module, (count, seconds) in sorted(summary.items()):
        if before:
            progress(f"aot: cache: module {module}: {count} outputs from an earlier build, {seconds:.0f} s of compile")
        else:
            progress(f"aot: module {module}: {count} outputs, {seconds:.0f} s of compile (summed over jobs)")


def build(modules: list[tuple[str, str]], arch_list: str, provider: str, build_dir: Path, wheel_dir: Path,
          job_gib: int, progress=print) -> Path:
    os.environ["FLASHINFER_CUDA_ARCH_LIST"] = arch_list  # read when FlashInfer is imported
    os.environ["FLASHINFER_WORKSPACE_BASE"] = str(build_dir)
    if not os.environ.get("MAX_JOBS", "").isdigit():  # an empty build argument counts as unset
        os.environ["MAX_JOBS"] = str(parallel_jobs(job_gib))
    os.environ.pop("FLASHINFER_DISABLE_JIT", None)
    from flashinfer import __version__ as version
    from flashinfer.jit import env as jit_env
    from flashinfer.jit.core import build_jit_specs

    specs = [make_spec(name, generator) for name, generator in modules]
    progress(f"aot: building {len(specs)} FlashInfer {version} modules for {arch_list} with MAX_JOBS="
             f"{os.environ['MAX_JOBS']}: {', '.join(s.name for s in specs)}")
    report_ninja_log(jit_env.FLASHINFER_JIT_DIR, progress, before=True)
    started = time.monotonic()
    try:
        build_jit_specs(specs, verbose=True, skip_prebuilt=False)
    except RuntimeError as exc:  # ninja's own output is above
        report_ninja_log(jit_env.FLASHINFER_JIT_DIR, progress)
        raise AotError(f"the build failed: {str(exc).splitlines()[0]}") from None
    report_ninja_log(jit_env.FLASHINFER_JIT_DIR, progress)
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / (1 << 20)
    progress(f"aot: built in {time.monotonic() - started:.0f} s; largest compile process {peak_gib:.1f} GiB")
    built = {s.name: jit_env.FLASHINFER_JIT_DIR / s.name / f"{s.name}.so" for s in specs}
    missing = [name for name, path in built.items() if not path.is_file()]
    if missing:
        raise AotError(f"ninja finished but these modules have no .so: {', '.join(missing)}")
    return write_wheel(wheel_dir, version, provider, architectures(arch_list), built)


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def shim_source(version: str) -> str:
    return f'''"""FlashInfer JIT modules built ahead of time for this image by dsv4-flash (flashinfer_aot.py), not FlashInfer's
own flashinfer-jit-cache wheels. FlashInfer discovers them through get_jit_cache_providers() (flashinfer/jit/env.py)."""
import json
from pathlib import Path
from types import SimpleNamespace

__version__ = "{version}"
_HERE = Path(__file__).resolve().parent


def get_jit_cache_providers():
    providers = json.loads((_HERE / "providers.json").read_text())
    return [SimpleNamespace(provider_id=p["provider_id"], distribution=p["distribution"], version=p["version"],
                            jit_cache_dir=str(_HERE / p["directory"]), cuda_architectures=tuple(p["cuda_architectures"]),
                            modules=tuple(p["modules"])) for p in providers]
'''


def write_wheel(wheel_dir: Path, flashinfer_version: str, provider: str, archs: list[str],
                built: dict[str, Path]) -> Path:
    """A wheel for `pip install --no-deps`: the shim, providers.json and <provider>/<module>/<module>.so."""
    version = f"{flashinfer_version}+dsv4.{provider}"
    providers = [{"provider_id": f"dsv4-{provider}", "distribution": DISTRIBUTION, "version": version,
                  "directory": provider, "cuda_architectures": archs, "modules": sorted(built)}]
    dist_info = f"{PACKAGE}-{version}.dist-info"
    files = {f"{PACKAGE}/__init__.py": shim_source(version).encode(),
             f"{PACKAGE}/providers.json": (json.dumps(providers, indent=1, sort_keys=True) + "\n").encode()}
    for name, path in sorted(built.items()):
        files[f"{PACKAGE}/{provider}/{name}/{name}.so"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: {version}\n"
                                      f"Summary: FlashInfer {flashinfer_version} modules built ahead of time for "
                                      f"{' '.join(archs)}: {' '.join(sorted(built))}\n").encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: dsv4-flash\nRoot-Is-Purelib: false\nTag: py3-none-linux_x86_64\n"
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheel = wheel_dir / f"{PACKAGE}-{version}-py3-none-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, WHEEL_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


# ---- checking -----------------------------------------------------------------------------------

def check(modules: list[tuple[str, str]], device_arch: str, load: bool, progress=print) -> None:
    """What FlashInfer does on a GPU of `device_arch` (FlashInfer's own normalised name for it, e.g. 10.0a on a
    B200): every module must resolve to a prebuilt .so, and with --load must load without compiling."""
    os.environ["FLASHINFER_CUDA_ARCH_LIST"] = device_arch  # stands in for the device query FlashInfer would make
    os.environ["FLASHINFER_DISABLE_JIT"] = "1"  # a module that is not prebuilt raises instead of compiling
    from flashinfer.jit import env as jit_env

    ours = [p for p in jit_env.FLASHINFER_AOT_PROVIDERS if p.distribution == DISTRIBUTION]
    if not ours:
        raise AotError(f"FlashInfer found no {DISTRIBUTION} provider (is {PACKAGE} installed and its version "
                       f"FlashInfer's?)")
    for name, generator in modules:
        spec = make_spec(name, generator)
        artifacts = spec.aot_artifacts
        if not artifacts or not all(a.path.is_file() for a in artifacts):
            raise AotError(f"{name}: no prebuilt module for {device_arch} (FlashInfer would compile it)")
        if load:
            spec.build_and_load()  # FLASHINFER_DISABLE_JIT: MissingJITCacheError unless try_load found the .so
        progress(f"check {device_arch}: {name} -> {artifacts[0].path} ({artifacts[0].provider_id})"
                 + (", loaded" if load else ""))


# ---- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashinfer_aot.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch-cubins", help="bake trtllm-gen artifact packages, every file checksum-verified")
    fetch.add_argument("--repository", required=True)
    fetch.add_argument("--out", type=Path, required=True)
    fetch.add_argument("--package", nargs=3, action="append", required=True, metavar=("NAME", "PATH", "SHA256"))
    fetch.add_argument("--no-flashinfer-check", action="store_true", help="do not compare the pins with FlashInfer's")
    fetch.add_argument("--needed-by", action="append", default=[], metavar="PACKAGE=module,module",
                       help="the modules that load a package: it is baked only when the module set has one of them")
    fetch.add_argument("--module", action="append", default=[])
    make = sub.add_parser("build", help="build the modules and write the flashinfer-jit-cache wheel")
    make.add_argument("--arch-list", required=True)
    make.add_argument("--provider", required=True)
    make.add_argument("--build-dir", type=Path, required=True)
    make.add_argument("--wheel-dir", type=Path, required=True)
    make.add_argument("--job-gib", type=int, required=True)
    make.add_argument("--module", action="append", required=True)
    verify = sub.add_parser("check", help="resolve (and --load) every module as FlashInfer would on a device")
    verify.add_argument("--device-arch", required=True)
    verify.add_argument("--load", action="store_true")
    verify.add_argument("--module", action="append", required=True)
    for command in (fetch, make, verify):
        command.add_argument("--module-set", default=FULL_SET, help="which modules: full (default) or a --set name")
        command.add_argument("--set", action="append", default=[], metavar="NAME=a,b", help="a named smaller set")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch-cubins":
            packages = cubins_for(args.package, args.needed_by, select(parse_modules(args.module), args.module_set,
                                                                        args.set) if args.module else None)
            if not args.no_flashinfer_check:
                from flashinfer import artifacts
                check_pins_agree(packages, artifacts)
            args.out.mkdir(parents=True, exist_ok=True)
            if not packages:
                print(f"cubins: module set {args.module_set} loads none of the packages; nothing baked")
            for _, path, sha in packages:
                fetch_package(args.repository, args.out, path, sha)
        elif args.command == "build":
            wheel = build(select(parse_modules(args.module), args.module_set, args.set), args.arch_list, args.provider, args.build_dir, args.wheel_dir,
                          args.job_gib)
            print(f"aot: wrote {wheel} ({wheel.stat().st_size / 1e6:.1f} MB)")
        else:
            check(select(parse_modules(args.module), args.module_set, args.set), args.device_arch, args.load)
    except AotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
