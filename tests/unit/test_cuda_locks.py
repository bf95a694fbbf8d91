"""The sm runtime locks: the CUDA toolchain wheels are the CUDA release's, and nothing in a lock overwrites another
package's files (issue 10 part 2). Each test names the defect it catches."""

from __future__ import annotations

import pytest
from packaging.version import Version

from dsv4_images import REPO_ROOT, locks, matrix, wheelhouse

M = matrix.load()
CUDA = [t.name for t in M.targets.values() if t.is_cuda]


def _lock_versions(target: matrix.Target) -> dict[str, str]:
    lock = REPO_ROOT / target.lock_paths["runtime"]
    return {r.name: r.version for r in wheelhouse.parse_lock(lock.read_text(), lock.name)}


@pytest.mark.parametrize("target", CUDA)
def test_the_lock_holds_the_cuda_toolchain_of_the_cuda_release(target):
    """Catches: a lock whose nvcc/ptxas/crt drift from the CUDA release (humming-kernels asks for any nvcc: 13.5)."""
    t = M.resolve(target)
    versions = _lock_versions(t)
    release = ".".join(t.toolchain.cuda.split(".")[:2])
    for pin in t.toolchain.cuda_wheels:
        name, version = pin.split("==")
        assert versions[name] == version, pin
    for name in ("nvidia-cuda-nvcc", "nvidia-cuda-crt", "nvidia-nvvm", "nvidia-cuda-cccl", "nvidia-cuda-runtime"):
        assert versions[name].startswith(release + "."), (name, versions[name])


@pytest.mark.parametrize("target", list(M.targets))
def test_cuda_python_never_overwrites_cuda_bindings(target):
    """Catches: cuda-python < 12.8 (monolithic, ships its own cuda/bindings) installed over cuda-bindings, which
    makes `import flashinfer` fail ("cuda.bindings.runtime has no attribute cudaLibrary_t")."""
    versions = _lock_versions(M.resolve(target))
    if "cuda-python" not in versions:
        return
    python, bindings = Version(versions["cuda-python"]), Version(versions["cuda-bindings"])
    assert python >= Version("12.8") and python.release[:2] == bindings.release[:2], (python, bindings)


def test_the_toolchain_pins_are_lock_overrides_of_the_runtime_and_build_locks():
    """The compile has no devel image under it: its nvcc and cuobjdump are the build lock's, at the runtime's versions."""
    t = M.resolve("sm120")
    assert set(t.toolchain.cuda_wheels) <= set(locks.lock_inputs(t, "runtime")["overrides"])
    build = locks.lock_inputs(t, "build")
    assert set(t.toolchain.cuda_wheels) <= set(build["overrides"])
    assert set(build["extra"]) == {*t.toolchain.cuda_wheels, t.vllm.sass.tool}
    text = (REPO_ROOT / t.lock_paths["build"]).read_text()
    for pin in (*t.toolchain.cuda_wheels, t.vllm.sass.tool):
        assert f"\n{pin} \\" in text, pin
    assert not set(t.toolchain.cuda_wheels) & set(locks.lock_inputs(M.resolve("cpu"), "runtime")["overrides"])
