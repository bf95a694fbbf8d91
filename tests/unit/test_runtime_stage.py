"""The sm images' runtime stages (issue 10 parts 2-3), read from the rendered Dockerfiles and the matrix (the
locks: test_cuda_locks.py). Each test names the defect it catches."""

from __future__ import annotations

import re

import pytest

from dsv4_images import REPO_ROOT, matrix, render
from dsv4_images.errors import UserError
from tests.support.local_files import broken_matrix

M = matrix.load()
FILES = render.render_all(M)
CUDA = [t.name for t in M.targets.values() if t.is_cuda]


def _stages(text: str) -> dict[str, tuple[str, str]]:
    """Stage name -> (parent, body), in order."""
    out = {}
    for m in re.finditer(r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S):
        out[m.group(2)] = (m.group(1), m.group(3))
    return out


def _runtime_stages(text: str) -> dict[str, str]:
    """The stages an image is made of: those descending from ${RUNTIME_BASE}."""
    stages, runtime = _stages(text), {}
    for name, (parent, body) in stages.items():
        if parent == "${RUNTIME_BASE}" or parent in runtime:
            runtime[name] = body
    return runtime


def _instructions(body: str, keyword: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", body)
    return [line for line in joined.splitlines() if line.startswith(keyword + " ")]


# ---- apt: every runtime package pinned ----------------------------------------------------------

@pytest.mark.parametrize("target", CUDA)
def test_every_runtime_apt_install_comes_from_the_dated_snapshot_only(target):
    """Catches: apt packages installed from the live archive (or NVIDIA's repo), drifting on every rebuild."""
    t = M.resolve(target)
    snapshot = t.toolchain.apt_snapshot
    assert re.search(r"/\d{8}T\d{6}Z/?$", snapshot.url)
    installs = [run for body in _runtime_stages(FILES[t.dockerfile]).values() for run in _instructions(body, "RUN")
                if "apt-get install" in run]
    assert installs
    for run in installs:
        before_update = run.split("apt-get update", 1)[0]
        assert "rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*" in before_update, run[:200]
        sources = re.search(r"printf '(Types: deb.*?)' > /etc/apt/sources.list.d/snapshot.sources", before_update)
        assert sources and f"URIs: {snapshot.url}\\n" in sources.group(1), run[:300]
        assert sources.group(1).count("URIs:") == 1


def test_the_cpu_target_is_the_one_runtime_without_a_snapshot_and_says_so():
    """The exception is explicit: snapshot.debian.org is not reachable from the machines that build the cpu image."""
    cpu = M.resolve("cpu")
    assert cpu.toolchain.apt_snapshot is None
    assert re.search(r"NOT from a\s+(?:#\s+)?dated snapshot", FILES[cpu.dockerfile])
    assert "snapshot.debian.org" in (REPO_ROOT / "matrix.toml").read_text()


@pytest.mark.parametrize("target", CUDA)
def test_the_runtime_installs_nothing_from_nvidia_s_apt_repository(target):
    """Catches: cuda-nvcc-13-0 & co. from NVIDIA's repo, which has no snapshots (nvcc/ptxas drift)."""
    packages = M.resolve(target).toolchain.runtime_packages
    assert not [p for p in packages if re.match(r"^(cuda-|libcu|libnv|libcublas|libcurand)", p)], packages


# ---- the runtime can compile what vLLM compiles at serve time ------------------------------------

@pytest.mark.parametrize("target", CUDA)
def test_the_runtime_has_and_checks_a_host_compiler_and_python_headers(target):
    """Catches: no host C/C++ compiler (nvcc's host g++, Triton's launcher gcc), no Python.h, GCC < 13 (DeepGEMM's
    C++20 <format>), an nvcc that is not the CUDA release the image names."""
    t = M.resolve(target)
    assert {"gcc", "g++", "libc6-dev", f"python{t.toolchain.python}-dev"} <= set(t.toolchain.runtime_packages)
    assert t.toolchain.gcc_min_major >= 13
    runs = [r for body in _runtime_stages(FILES[t.dockerfile]).values() for r in _instructions(body, "RUN")]
    check = next(r for r in runs if "nvcc --version" in r)
    release = ".".join(t.toolchain.cuda.split(".")[:2])
    assert f'nvcc --version | grep -q "release {release},"' in check
    assert f'[ "$(gcc -dumpversion | cut -d. -f1)" -ge {t.toolchain.gcc_min_major} ]' in check
    assert "#include <format>" in check and "g++ -std=c++20" in check
    assert "#include <Python.h>" in check and "sysconfig.get_path(\"include\")" in check
    for arch in t.toolchain.flashinfer_cuda_arch_list.split():
        code = arch.replace(".", "")
        assert f"-gencode=arch=compute_{code},code=sm_{code}" in check


@pytest.mark.parametrize("target", CUDA)
def test_cuda_home_is_the_toolchain_the_image_has(target):
    """Catches: CUDA_HOME=/usr/local/cuda in an image whose nvcc is not there (the base has no toolkit)."""
    t = M.resolve(target)
    text = FILES[t.dockerfile]
    assert t.image_env()["CUDA_HOME"] == t.cuda_home != "/usr/local/cuda"
    assert f'ENV CUDA_HOME="{t.cuda_home}"' in text  # the image stage
    assert f"ENV CUDA_HOME={t.cuda_home} PATH={t.cuda_home}/bin:$PATH" in text  # where the toolkit is completed
    assert t.cuda_home.startswith(t.site_packages + "/nvidia/cu" + t.toolchain.cuda.split(".")[0])
    assert f"COPY --from=cuda-stubs /usr/local/cuda-{t.toolchain.cuda.rsplit('.', 1)[0]}/" in text  # libcuda stub


# ---- FlashInfer: arch list at build time only, modules prebuilt, cubins baked ----------------------

@pytest.mark.parametrize("target", CUDA)
def test_arch_lists_are_build_time_settings_only(target):
    """Catches: FLASHINFER_CUDA_ARCH_LIST="10.0a 10.3a" in the running image (every JIT compiles for both arches)."""
    t = M.resolve(target)
    assert not {"FLASHINFER_CUDA_ARCH_LIST", "TORCH_CUDA_ARCH_LIST"} & set(t.image_env())
    for name, body in _runtime_stages(FILES[t.dockerfile]).items():
        for env in _instructions(body, "ENV"):
            assert "CUDA_ARCH_LIST" not in env, (name, env)
    aot = _stages(FILES[t.dockerfile])["flashinfer-aot"][1]
    assert f'build --arch-list "{t.toolchain.flashinfer_cuda_arch_list}"' in aot


@pytest.mark.parametrize("target", CUDA)
def test_the_target_s_flashinfer_modules_are_built_installed_and_found(target):
    """Catches: an image that JIT-compiles FlashInfer on the first request, or prebuilt modules it cannot find."""
    t = M.resolve(target)
    stages = _stages(FILES[t.dockerfile])
    assert stages["flashinfer-aot"][0] == "runtime-base" and stages["runtime-deps"][0] == "runtime-base"
    assert stages["vllm-install"][0] == "runtime-deps"
    wanted = {f"--module {m.name}={m.generator}" for m in t.flashinfer.modules}
    (build,) = [r for r in _instructions(stages["flashinfer-aot"][1], "RUN") if " build " in r]
    assert set(re.findall(r"--module \S+", build)) == wanted
    (install,) = _instructions(stages["runtime-deps"][1], "RUN")
    assert "pip install --no-deps --no-index --no-compile --no-cache-dir /tmp/flashinfer-aot/*.whl" in install
    checks = re.findall(r"check --device-arch (\S+)((?:\s+--module \S+)+)", install)
    assert [a for a, _ in checks] == t.toolchain.flashinfer_cuda_arch_list.split()
    for _, modules in checks:
        assert set(re.findall(r"--module \S+", modules)) == wanted


@pytest.mark.parametrize("target", CUDA)
def test_cubins_are_baked_and_verified_or_absent_and_downloads_are_off(target):
    """Catches: trtllm-gen cubins fetched from NVIDIA's server on the first request (offline: the NVFP4 MoE that vLLM
    picks first on SM10x cannot even be built), fetched unverified, or silently retried offline."""
    t = M.resolve(target)
    text, env = FILES[t.dockerfile], t.image_env()
    assert env["FLASHINFER_NO_DOWNLOAD"] == "1"
    fetch = [r for r in _instructions(text, "RUN") if "fetch-cubins" in r]
    if not t.flashinfer.cubin_packages:
        assert not fetch and "FLASHINFER_CUBIN_DIR" not in env
        return
    (fetch,) = fetch
    for c in t.flashinfer.cubin_packages:
        assert f"--package {c.name} {c.path} {c.checksums_sha256}" in fetch
    assert env["FLASHINFER_CUBIN_DIR"] == t.flashinfer.cubin_dir
    runtime_deps = _stages(text)["runtime-deps"][1]
    assert f"COPY --from=flashinfer-cubins {t.flashinfer.cubin_dir} {t.flashinfer.cubin_dir}" in runtime_deps
    assert "--no-flashinfer-check" not in fetch  # the pins are compared with the installed FlashInfer's


@pytest.mark.parametrize("target", CUDA)
def test_the_image_id_changes_with_what_is_prebuilt_and_pinned(target):
    """The compile caches are keyed to the build id: a new module list, cubin or toolchain pin must change it."""
    labels = dict(M.resolve(target).image_labels())
    for key in ("io.dsv4-flash.flashinfer.aot-modules", "io.dsv4-flash.flashinfer.cubins",
                "io.dsv4-flash.cuda.toolchain-wheels", "io.dsv4-flash.apt-snapshot"):
        assert key in labels
    t = M.resolve(target)
    changed = t.model_copy(update={"flashinfer": t.flashinfer.model_copy(update={"modules": t.flashinfer.modules[:1]})})
    assert changed.build_id() != t.build_id()


# ---- the matrix refuses what would break these -------------------------------------------------------

@pytest.mark.parametrize("old,new,message", [
    ("apt_snapshot = {", "apt_snapshotx = {", "targets.sm100.toolchain.apt_snapshotx: unknown key"),
    ('url = "http://snapshot.ubuntu.com/ubuntu/20261129T000000Z"', 'url = "http://archive.ubuntu.com/ubuntu"',
     "targets.sm100.toolchain.apt_snapshot.url"),
    ('name = "trtllm_comm"', 'name = "sampling"', "targets.sm100.flashinfer.modules: a module is listed twice"),
    ('compute_capabilities = ["10.0", "10.3"]', "compute_capabilities = []",
     "targets.sm100.compute_capabilities: a cuda target needs at least one"),
    ("gcc_min_major = 13\n", "", "targets.sm100.toolchain.gcc_min_major: missing"),
    ('cubins_repository = "https://edge', 'cubins_repositoryx = "https://edge', "targets.sm100.flashinfer.cubins_repositoryx"),
    ('generator = "flashinfer.jit.sampling:gen_sampling_module"\nwhy = "top-k/top-p sampling: vLLM',
     'generator = "os:system"\nwhy = "top-k/top-p sampling: vLLM', "targets.sm100.flashinfer.modules[5].generator"),
])
def test_the_matrix_refuses_a_runtime_that_is_not_pinned_or_named(tmp_path, old, new, message):
    with pytest.raises(UserError) as exc:
        matrix.load(broken_matrix(tmp_path, old, new))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_a_cuda_target_without_prebuilt_flashinfer_is_refused(tmp_path):
    text = matrix.MATRIX_PATH.read_text()
    table = text[text.index("\n[targets.sm100.flashinfer]\n"):text.index("\n[targets.sm100.vllm]\n")]
    path = broken_matrix(tmp_path, table, "")
    with pytest.raises(UserError, match="targets.sm100.flashinfer: missing"):
        matrix.load(path)
