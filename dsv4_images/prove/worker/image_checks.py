"""prove's checks inside a container of the built sm image (no GPU; our libcuda stub on LD_LIBRARY_PATH for this
run only). Standard library and the image's own packages; the project files it uses are mounted read-only.

    python image_checks.py REQUEST.json RESULT.json

REQUEST names the mounted files (cuda_toolkit.py, flashinfer_aot.py, sass_check.py, the patches, the committed
base manifest) and what the target states (CUDA release, GCC minimum, arch lists, compute capabilities, the
extensions that must hold SASS, the FlashInfer modules and sets). RESULT is a list of
{"name", "ok", "detail"}: each check ran the real thing in this image, as the container's (arbitrary) user.
"""

import contextlib
import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ATTEMPTS = []


def _refuse_connections() -> None:
    """Every outgoing connection is recorded and refused: an import or first use that fetches shows up here
    (the container also runs with --network none)."""
    original = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            ATTEMPTS.append(repr(address))
            raise OSError("dsv4 prove: no network in the image checks")
        return original(self, address)
    socket.socket.connect = connect


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:400]


def imports(req: dict) -> tuple[bool, str]:
    started = time.monotonic()
    for name in ("torch", "triton", "flashinfer", "vllm", "vllm.entrypoints.openai.api_server"):
        __import__(name)
    took = time.monotonic() - started
    if ATTEMPTS:
        return False, f"importing vLLM's API server tried to connect to {', '.join(ATTEMPTS[:3])}"
    import torch
    return True, (f"torch {torch.__version__}, vLLM's API server imported in {took:.0f}s with no connection attempted; "
                  f"torch.cuda.is_available()={torch.cuda.is_available()} against the stub")


def toolkit(req: dict) -> tuple[bool, str]:
    tk = _load(req["files"]["cuda_toolkit"], "cuda_toolkit")
    home = Path(os.environ["CUDA_HOME"])
    done = tk.check(home, req["cuda_release"], req["gcc_min"], req["flashinfer_archs"])
    stub = home / "lib" / "stubs" / "libcuda.so"
    return True, "; ".join(done) + f"; link stub {stub} ({len(tk.driver_entry_points(home))} entry points)"


def triton_launcher(req: dict) -> tuple[bool, str]:
    """Triton's own first use: it compiles its CUDA utils module with gcc against Python.h and loads it."""
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-")
    from triton.backends.nvidia import driver
    driver.CudaUtils()
    built = sorted(p.name for p in Path(os.environ["TRITON_CACHE_DIR"]).rglob("*.so"))
    return bool(built), f"triton compiled and loaded {', '.join(built) or 'nothing'} with the image's gcc"


def flashinfer_lookup(req: dict) -> tuple[bool, str]:
    """Every module of the set the image was built with resolves to its prebuilt .so through FlashInfer's own
    AOT lookup, JIT disabled, on each arch it was built for."""
    aot = _load(req["files"]["flashinfer_aot"], "flashinfer_aot")
    chosen = Path("/usr/share/dsv4-flash/flashinfer-module-set").read_text().strip()
    modules = [tuple(m) for m in req["flashinfer_modules"]]
    selected = aot.select(modules, chosen, req["flashinfer_sets"])
    lines = []
    for arch in req["flashinfer_archs"]:
        aot.check(selected, arch, load=False, progress=lines.append)
    missing = [name for name, _ in modules if (name, dict(modules)[name]) not in selected]
    return True, (f"set {chosen}: {', '.join(n for n, _ in selected)} found for {' '.join(req['flashinfer_archs'])} "
                  "with JIT disabled" + (f"; not prebuilt in this set: {', '.join(missing)}" if missing else ""))


def sass(req: dict) -> tuple[bool, str]:
    """vLLM's extensions as installed hold SASS for every compute capability (cuobjdump: Triton's bundled copy)."""
    import triton
    cuobjdump = next(Path(triton.__file__).parent.rglob("cuobjdump"))
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    result = subprocess.run([sys.executable, req["files"]["sass_check"], str(site / "vllm"), "--runs-on",
                             *req["compute_capabilities"], "--require",
                             *[r.removeprefix("vllm/") for r in req["sass_required"]], "--cuobjdump", str(cuobjdump)],
                            capture_output=True, text=True)
    lines = (result.stdout + result.stderr).strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    return result.returncode == 0, ("; ".join(errors[:3]) if errors else
                                    f"{len([line for line in lines if '.so' in line])} extensions checked")


def patches(req: dict) -> tuple[bool, str]:
    """Each patch of the series is applied in the installed vLLM: it reverses cleanly (dry run). --force, not
    --batch: --batch takes a patch that is not applied for one that is reversed and applies it, exit 0."""
    site = next(p for p in sys.path if p.endswith("site-packages"))
    applied, refused = [], []
    for path in req["files"]["patches"]:
        result = subprocess.run(["patch", "-p1", "-R", "--dry-run", "--force", "-d", site, "-i", path],
                                capture_output=True, text=True)
        (applied if result.returncode == 0 else refused).append(Path(path).name)
    return not refused, (f"not applied: {', '.join(refused)}" if refused else f"applied: {', '.join(applied)}")


def packages(req: dict) -> tuple[bool, str]:
    """The image's distribution packages are exactly the committed manifest's (no apt ran, nothing drifted)."""
    recorded = Path("/usr/share/dsv4-flash/dpkg-manifest.txt").read_text().split()
    committed = [line for line in Path(req["files"]["manifest"]).read_text().split() if not line.startswith("#")]
    differ = sorted(set(recorded) ^ set(committed))
    return not differ, (f"{len(recorded)} packages, equal to the manifest" if not differ else
                        f"{len(differ)} lines differ from the manifest: {', '.join(differ[:4])}")


CHECKS = {"imports-offline": imports, "cuda-toolkit": toolkit, "triton-launcher": triton_launcher,
          "flashinfer-aot-lookup": flashinfer_lookup, "sass-installed": sass, "patches-applied": patches,
          "distribution-packages": packages}


def main() -> int:
    req = json.loads(Path(sys.argv[1]).read_text())
    _refuse_connections()
    results = []
    only = req.get("only") or list(CHECKS)
    for name, check in CHECKS.items():
        if name not in only:
            continue
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                ok, detail = check(req)
        except Exception as exc:  # each check reports its own failure; the others still run
            ok, detail = False, _one_line(exc)
            print(f"{name}: {traceback.format_exc()}", file=sys.stderr)
        results.append({"name": name, "ok": ok, "detail": detail})
    results.append({"name": "user", "ok": os.getuid() != 0 and os.getgid() == 0,
                    "detail": f"ran as uid {os.getuid()}, gid {os.getgid()}"})
    Path(sys.argv[2]).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
