"""The parts of a wheel-mode sm build that need no CUDA base, run here on the real files: the locked vLLM wheel
downloaded and verified through the project's wheelhouse, the patch series applied to the unpacked wheel, and
the SASS check run on its extensions with cuobjdump, as the vllm-from-wheel stage runs it. Times go to the report."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT, matrix, patches, wheelhouse
from tests.conftest import need

pytestmark = pytest.mark.network
M = matrix.load()


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cuobjdump() -> str | None:
    try:
        import nvidia  # nvidia-cuda-cuobjdump (requirements/dev.in) installs nvidia/cu13/bin/cuobjdump
        for root in nvidia.__path__:
            found = next(Path(root).glob("cu*/bin/cuobjdump"), None)
            if found:
                return str(found)
    except ImportError:
        pass
    return shutil.which("cuobjdump")


@pytest.fixture(scope="module")
def wheel():
    t = M.resolve("sm120")
    started = time.monotonic()
    files = wheelhouse.resolve_lock(REPO_ROOT / t.lock_paths["wheel"], t.toolchain.python, t.toolchain.wheel_platform)
    assert sorted(f.filename for f in files) == [  # vLLM's wheel, and the cuobjdump the stage checks it with
        "nvidia_cuda_cuobjdump-13.2.51-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl"]
    vllm_wheel = next(f for f in files if f.project == "vllm")
    path = wheelhouse.download(vllm_wheel)
    from dsv4_images.checksums import sha256_file
    assert sha256_file(path) == vllm_wheel.sha256 == "4b6bdec4ab269990bf70d45a3c1e94c3760a27064513760193b26d6f0da883aa"
    return path, time.monotonic() - started


def test_the_locked_wheel_is_the_one_pypi_serves_for_both_targets(wheel, report):
    path, seconds = wheel
    assert M.resolve("sm100").lock_paths["wheel"] != M.resolve("sm120").lock_paths["wheel"]
    assert (REPO_ROOT / "locks/sm100.wheel.txt").read_text().split("\n", 2)[2] == \
        (REPO_ROOT / "locks/sm120.wheel.txt").read_text().split("\n", 2)[2]
    report["wheel mode: resolve + verify locked vLLM wheel (s)"] = round(seconds, 1)
    report["wheel mode: vLLM wheel size (MB)"] = round(path.stat().st_size / 1e6, 1)


@pytest.mark.parametrize("target", ["sm100", "sm120"])
def test_the_patches_apply_to_the_unpacked_wheel(target, wheel, tmp_path, report):
    t = M.resolve(target)
    started = time.monotonic()
    tree = patches.pristine_tree(t, tmp_path, progress=lambda _: None, mode="wheel")
    lines = patches.apply_series(t, tree)
    report[f"wheel mode: unpack .py files + apply {len(lines)} patches, {target} (s)"] = round(time.monotonic() - started, 1)
    assert len(lines) == len(t.patches) and all("applies cleanly" in line for line in lines)


@pytest.mark.parametrize("target", ["sm100", "sm120"])
def test_the_sass_check_passes_the_wheel_as_the_build_stage_runs_it(target, wheel, report):
    cuobjdump = _cuobjdump()
    need(cuobjdump is not None, "cuobjdump (pip install nvidia-cuda-cuobjdump, see requirements/dev.in)")
    t = M.resolve(target)
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO_ROOT / t.sass_check_script), str(wheel[0]), *t.sass_check_args(),
                             "--cuobjdump", cuobjdump], capture_output=True, text=True)
    report[f"wheel mode: sass check of the wheel's 13 extensions, {target} (s)"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stderr
    for name in t.vllm.sass.required:
        line = next(x for x in result.stdout.splitlines() if x.startswith(f"{name}: "))
        assert all(f"{cc} SASS" in line for cc in t.compute_capabilities), line


def test_the_sass_check_would_fail_the_wheel_for_an_arch_it_does_not_carry(wheel):
    """The same wheel asked for SM 9.0-only kernels it lacks: the check is not a rubber stamp."""
    cuobjdump = _cuobjdump()
    need(cuobjdump is not None, "cuobjdump (pip install nvidia-cuda-cuobjdump, see requirements/dev.in)")
    result = subprocess.run([sys.executable, str(REPO_ROOT / M.resolve("sm120").sass_check_script), str(wheel[0]),
                             "--runs-on", "12.0", "--require", "vllm/_flashmla_C.abi3.so", "--cuobjdump", cuobjdump],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "error: vllm/_flashmla_C.abi3.so has no SASS that runs on compute capability 12.0 (it holds sm_100f, sm_90a)" \
        in result.stderr


def test_the_stage_s_pip_download_gets_the_wheel_from_build_py_s_loopback_index(wheel, tmp_path, report):
    """The vllm-from-wheel stage's own pip command, run here against the index build.py serves for the build."""
    from dsv4_images import render
    from tests.support.fetch_lint import instructions
    t = M.resolve("sm120")
    step = next(a for _, kw, a, s in instructions(render.render_dockerfile(M, t)) if kw == "RUN" and s == "vllm-from-wheel"
                and "pip download" in a)
    command = step.split(" pip download ", 1)[1].replace("/tmp/wheel-requirements.txt", str(REPO_ROOT / t.lock_paths["wheel"]))
    command = command.replace("-d /tmp/wheels", f"-d {tmp_path}/dist").split(" && ")[0]
    files = wheelhouse.resolve_lock(REPO_ROOT / t.lock_paths["wheel"], t.toolchain.python, t.toolchain.wheel_platform)
    wheelhouse.fetch(files, progress=lambda _: None)  # what build.py does before it serves them
    started = time.monotonic()
    with wheelhouse.LoopbackIndex(files, port=_free_port()) as index:
        result = subprocess.run(f'{sys.executable} -m pip download -q {command}', shell=True, capture_output=True, text=True,
                                env={"PIP_INDEX_URL": f"{index.url}/simple", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    report["wheel mode: the stage's pip download from the loopback index (s)"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(f.filename for f in files)
