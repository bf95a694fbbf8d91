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


# ---- distribution packages: every one pinned by the base's manifest -------------------------------

@pytest.mark.parametrize("target", CUDA)
def test_no_runtime_stage_runs_apt_the_base_carries_every_package(target):
    """Catches: apt packages installed from the live archive at build time, drifting on every rebuild, or a
    runtime package the bootstrapped base does not carry."""
    t = M.resolve(target)
    assert t.packages_in_base and t.base.runtime is None
    text = FILES[t.dockerfile]
    assert "apt-get" not in text, "an sm Dockerfile runs apt"
    assert set(t.toolchain.runtime_packages) <= set(t.base_packages())
    assert set(t.vllm.compile.packages) <= set(t.base_packages())
    assert f"ARG RUNTIME_BASE={t.base_tag}" in text and f"ARG BUILD_BASE={t.base_tag}" in text


@pytest.mark.parametrize("target", CUDA)
def test_every_package_the_base_carries_is_in_its_committed_manifest(target):
    """Catches: a runtime package added to the matrix without moving the manifest forward (the bootstrap would
    refuse at build time; this says so at review time)."""
    t = M.resolve(target)
    manifest = (REPO_ROOT / t.base.bootstrap.manifest).read_text().splitlines()
    names = {line.split("=", 1)[0] for line in manifest if line and not line.startswith("#")}
    assert set(t.base_packages()) <= names, set(t.base_packages()) - names
    labels = dict(t.image_labels())
    assert labels["io.dsv4-flash.base.manifest.sha256"] == t.base_manifest_sha256()
    assert labels["io.dsv4-flash.base.recipe"] == t.base_recipe()


def test_the_cpu_target_is_built_on_its_bootstrapped_base_too():
    """Catches: the cpu image going back to apt from the live archive (unpinned) or to an upstream image."""
    cpu = M.resolve("cpu")
    assert cpu.packages_in_base and cpu.base.runtime is None
    text = FILES[cpu.dockerfile]
    assert "apt-get" not in text
    assert set(cpu.toolchain.runtime_packages) <= set(cpu.base_packages())
    manifest = (REPO_ROOT / cpu.base.bootstrap.manifest).read_text().splitlines()
    assert set(cpu.base_packages()) <= {line.split("=", 1)[0] for line in manifest if line and not line.startswith("#")}
    assert f"ARG RUNTIME_BASE={cpu.base_tag}" in text


@pytest.mark.parametrize("target", CUDA)
def test_the_runtime_installs_nothing_from_nvidia_s_apt_repository(target):
    """Catches: cuda-nvcc-13-0 & co. from NVIDIA's repo, which has no snapshots (nvcc/ptxas drift)."""
    packages = M.resolve(target).toolchain.runtime_packages
    assert not [p for p in packages if re.match(r"^(cuda-|libcu|libnv|libcublas|libcurand)", p)], packages


# ---- the runtime can compile what vLLM compiles at serve time ------------------------------------

@pytest.mark.parametrize("target", CUDA)
def test_the_runtime_has_and_checks_a_host_compiler_and_python_headers(target):
    """Catches: no host C/C++ compiler (nvcc's host g++, Triton's launcher gcc), no Python.h, GCC < 13 (DeepGEMM's
    C++20 <format>), an nvcc that is not the CUDA release the image names. The checks themselves run in
    cuda_toolkit.py (tests/unit/test_cuda_toolkit.py)."""
    t = M.resolve(target)
    assert {"gcc", "g++", "libc6-dev", f"python{t.toolchain.python}-dev"} <= set(t.toolchain.runtime_packages)
    assert t.toolchain.gcc_min_major >= 13
    runs = [r for body in _runtime_stages(FILES[t.dockerfile]).values() for r in _instructions(body, "RUN")]
    (check,) = [r for r in runs if "cuda_toolkit.py" in r]
    release = ".".join(t.toolchain.cuda.split(".")[:2])
    assert f'--cuda-home "${{CUDA_HOME}}" --release {release} --gcc-min {t.toolchain.gcc_min_major}' in check
    assert re.findall(r"--arch (\S+)", check) == t.toolchain.flashinfer_cuda_arch_list.split()
    assert t.cuda_toolkit_script in t.context_files()


@pytest.mark.parametrize("target", CUDA)
def test_cuda_home_is_the_toolchain_the_image_has(target):
    """Catches: CUDA_HOME=/usr/local/cuda in an image whose nvcc is not there (the base has no toolkit), or a
    libcuda stub taken from an image that cannot be pulled."""
    t = M.resolve(target)
    text = FILES[t.dockerfile]
    assert t.image_env()["CUDA_HOME"] == t.cuda_home != "/usr/local/cuda"
    assert f'ENV CUDA_HOME="{t.cuda_home}"' in text  # the image stage
    assert f"ENV CUDA_HOME={t.cuda_home} PATH={t.cuda_home}/bin:$PATH" in text  # where the toolkit is completed
    assert t.cuda_home.startswith(t.site_packages + "/nvidia/cu" + t.toolchain.cuda.split(".")[0])
    assert "--from=cuda-stubs" not in text and "nvidia/cuda" not in text.split("\nFROM ", 1)[0].split("ARG BUILD_BASE")[1]


@pytest.mark.parametrize("target", CUDA)
def test_the_image_tells_the_container_toolkit_what_it_needs(target):
    """Catches: an image without nvidia/cuda's variables, which the NVIDIA container toolkit reads to expose the
    GPUs and the driver's libraries, and to refuse a driver too old for the image's CUDA."""
    t = M.resolve(target)
    env = t.image_env()
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert env["NVIDIA_REQUIRE_CUDA"] == f"cuda>={t.cuda_release}"
    assert f'ENV NVIDIA_REQUIRE_CUDA="cuda>={t.cuda_release}"' in FILES[t.dockerfile]
    assert t.serve_defaults()["cuda"] == {"release": t.cuda_release, "min_driver": t.toolchain.min_driver}


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
    selection = ['--module-set "${FLASHINFER_MODULE_SET}"', *t.flashinfer.set_arguments()]
    (build,) = [r for r in _instructions(stages["flashinfer-aot"][1], "RUN") if " build " in r]
    assert set(re.findall(r"--module \S+", build)) == wanted
    assert all(a in build for a in selection)
    (install,) = _instructions(stages["runtime-deps"][1], "RUN")
    assert "pip install --no-deps --no-index --no-compile --no-cache-dir /tmp/flashinfer-aot/*.whl" in install
    checks = re.findall(r"check --device-arch (\S+) (.*?)((?:\s+--module \S+)+)", install)
    assert [a for a, _, _ in checks] == t.toolchain.flashinfer_cuda_arch_list.split()
    for _, chosen, modules in checks:
        assert set(re.findall(r"--module \S+", modules)) == wanted
        assert all(a in chosen for a in selection)
    assert 'echo "${FLASHINFER_MODULE_SET}" > /usr/share/dsv4-flash/flashinfer-module-set' in install
    assert "ARG FLASHINFER_MODULE_SET=full" in stages["flashinfer-aot"][1]


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
                "io.dsv4-flash.cuda.toolchain-wheels", "io.dsv4-flash.base.manifest.sha256"):
        assert key in labels
    t = M.resolve(target)
    changed = t.model_copy(update={"flashinfer": t.flashinfer.model_copy(update={"modules": t.flashinfer.modules[:1]})})
    assert changed.build_id() != t.build_id()


# ---- the matrix refuses what would break these -------------------------------------------------------

@pytest.mark.parametrize("old,new,message", [
    (', manifest = "bases/trixie-cuda.manifest" }', " }", "targets.sm100.base.bootstrap.manifest: missing"),
    ('min_driver = "580.65.06"', 'min_driver = "580"', "targets.sm100.toolchain.min_driver"),
    ('module_sets = { ci = ["sampling"] }', 'module_sets = { ci = ["sampler"] }', "targets.sm100.flashinfer.module_sets.ci"),
    ('module_sets = { ci = ["sampling"] }', 'module_sets = { full = ["sampling"] }',
     "targets.sm100.flashinfer.module_sets.full"),
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
