"""The sm images' own base (issue 16 part 1): the bootstrap's package manifest, the CUDA toolkit made from wheels
with our libcuda link stub, the FlashInfer module set a build picks, and what the entrypoint checks of the host
driver. Each test names the defect it catches; the real bootstrap and the real image build run in
tests/integration/test_sm_image.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT, base, matrix, plan, provenance
from dsv4_images import flashinfer_aot as aot
from dsv4_images.errors import UserError
from dsv4_images.in_image import cuda_toolkit
from dsv4_images.in_image import entrypoint as ep

M = matrix.load()
SM120, SM100, CPU = M.resolve("sm120"), M.resolve("sm100"), M.resolve("cpu")
TOOLKIT = REPO_ROOT / "dsv4_images" / "in_image" / "cuda_toolkit.py"


# ---- the base's manifest ------------------------------------------------------------------------------

def _rootfs(tmp_path: Path, status: str) -> Path:
    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        data = status.encode()
        info = tarfile.TarInfo("./var/lib/dpkg/status")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


STATUS = """Package: libc6
Status: install ok installed
Version: 2.41-12
Description: GNU C Library
 continued line: Version: 9

Package: gone
Status: deinstall ok config-files
Version: 1.0

Package: python3.13
Status: install ok installed
Version: 3.13.5-2
"""


def test_the_manifest_is_every_installed_package_and_its_version(tmp_path):
    """Catches: removed packages (config-files) or continuation lines read as installed versions."""
    assert base.packages_in(_rootfs(tmp_path, STATUS)) == ["libc6=2.41-12", "python3.13=3.13.5-2"]


def test_a_rootfs_without_a_dpkg_database_is_one_line(tmp_path):
    path = tmp_path / "empty.tar"
    with tarfile.open(path, "w"):
        pass
    with pytest.raises(UserError, match="no var/lib/dpkg/status"):
        base.packages_in(path)


def test_a_base_whose_packages_moved_is_refused_naming_them(tmp_path, monkeypatch):
    """Catches: a point release of the live archive silently changing what the image is built on."""
    manifest = tmp_path / "m.manifest"
    manifest.write_text("# comment\nlibc6=2.41-12\npython3.13=3.13.5-2\ncurl=8.14.1-2\n")
    target = SM120.model_copy(update={"base": SM120.base.model_copy(update={
        "bootstrap": SM120.base.bootstrap.model_copy(update={"manifest": str(manifest)})})})
    monkeypatch.setattr(base, "REPO_ROOT", Path("/"))
    got = ["libc6=2.41-13", "python3.13=3.13.5-2", "zlib1g=1:1.3"]
    with pytest.raises(UserError) as exc:
        base.check_manifest(target, got, update=False, emit=print)
    message = str(exc.value)
    assert "\n" not in message and "3 packages differ" in message
    assert "libc6 2.41-12 -> 2.41-13" in message and "curl 8.14.1-2 missing" in message and "zlib1g 1:1.3 added" in message
    assert "--update-manifest" in message
    base.check_manifest(target, ["curl=8.14.1-2", "libc6=2.41-12", "python3.13=3.13.5-2"], update=False, emit=print)
    lines = []
    base.check_manifest(target, got, update=True, emit=lines.append)
    assert manifest.read_text() == "libc6=2.41-13\npython3.13=3.13.5-2\nzlib1g=1:1.3\n" and "3 packages" in lines[0]


@pytest.mark.parametrize("text,message", [("libc6 2.41-12\n", "is not a package=version line"),
                                          ("=\n", "is not a package=version line"),
                                          (b"\xff\xfe", "cannot be read")])
def test_a_malformed_manifest_is_one_line(tmp_path, monkeypatch, text, message):
    manifest = tmp_path / "m.manifest"
    manifest.write_bytes(text if isinstance(text, bytes) else text.encode())
    target = SM120.model_copy(update={"base": SM120.base.model_copy(update={
        "bootstrap": SM120.base.bootstrap.model_copy(update={"manifest": str(manifest)})})})
    monkeypatch.setattr(base, "REPO_ROOT", Path("/"))
    with pytest.raises(UserError, match=message) as exc:
        base.check_manifest(target, ["libc6=2.41-12"], update=False, emit=print)
    assert "\n" not in str(exc.value)


def test_many_differences_are_still_one_line():
    pinned = [f"p{i}=1" for i in range(30)]
    line = base.manifest_difference(pinned, [f"p{i}=2" for i in range(30)])
    assert line.startswith("30 packages differ") and "and 26 more" in line and "\n" not in line
    assert base.manifest_difference(pinned, list(pinned)) is None


def test_the_base_tag_changes_with_its_package_list():
    """Catches: a base bootstrapped for the cpu image (or an older package list) standing in for the sm one."""
    assert SM120.base_tag == SM100.base_tag != CPU.base_tag
    more = SM120.model_copy(update={"toolchain": SM120.toolchain.model_copy(
        update={"runtime_packages": (*SM120.toolchain.runtime_packages, "procps")})})
    assert more.base_tag != SM120.base_tag and "procps" in more.base_recipe()
    assert base.local_tag(SM120) == SM120.base_tag


@pytest.mark.parametrize("target", [SM120, CPU], ids=lambda t: t.name)
def test_no_base_config_names_an_upstream_image(target):
    """Every target's base is bootstrapped here: none stands for an upstream image any more."""
    labels = base.base_config("ab" * 32, target)["config"]["Labels"]
    assert labels["io.dsv4-flash.base.recipe"] == target.base_recipe()
    assert "io.dsv4-flash.base.stands-for" not in labels


# ---- the CUDA toolkit from wheels, with our libcuda link stub ------------------------------------------

CUDA_H = """#define CUDAAPI
typedef int CUresult;
#define cuCtxCreate cuCtxCreate_v4
CUresult CUDAAPI cuInit(unsigned int Flags);
CUresult CUDAAPI cuCtxCreate(void **pctx, unsigned int flags, int dev);
%s
"""


def _fake_cuda_home(tmp_path: Path, entry_points: int = 120) -> Path:
    home = tmp_path / "cu13"
    (home / "include").mkdir(parents=True)
    (home / "bin").mkdir()
    (home / "lib").mkdir()
    extra = "\n".join(f"CUresult CUDAAPI cuFunc{i}(int x);" for i in range(entry_points))
    (home / "include" / "cuda.h").write_text(CUDA_H % extra)
    (home / "lib" / "libcudart.so.13").write_bytes(b"")
    return home


def test_the_link_stub_defines_every_entry_point_under_the_names_code_references(tmp_path):
    """Catches: a stub missing the versioned names (cuCtxCreate_v4) that code compiled against cuda.h links to."""
    home = _fake_cuda_home(tmp_path)
    names = cuda_toolkit.driver_entry_points(home)
    assert "cuCtxCreate_v4" in names and "cuCtxCreate" not in names and "cuInit" in names
    assert cuda_toolkit.write_stub(home) == len(names)
    stub = home / "lib" / "stubs" / "libcuda.so"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(stub)], capture_output=True, text=True).stdout
    assert " T cuCtxCreate_v4" in symbols and " T cuFunc119" in symbols
    soname = subprocess.run(["readelf", "-d", str(stub)], capture_output=True, text=True).stdout
    assert "[libcuda.so.1]" in soname


def test_the_layout_gets_lib64_and_unversioned_names(tmp_path):
    home = _fake_cuda_home(tmp_path)
    (home / "bin" / "nvcc").write_text("#!/bin/sh\n")
    cuda_toolkit.complete_layout(home)
    cuda_toolkit.complete_layout(home)  # idempotent: a rebuilt layer runs it on a tree that has them
    assert (home / "lib64").resolve() == (home / "lib").resolve()
    assert (home / "lib" / "libcudart.so").readlink() == Path("libcudart.so.13")


@pytest.mark.parametrize("broken,message", [
    ("no nvcc", "has no bin/nvcc"),
    ("no cuda.h", "cuda.h is missing"),
    ("not the driver API", "declares 2 driver entry points"),
])
def test_a_toolchain_that_is_not_one_fails_in_one_line(tmp_path, broken, message):
    """Catches: a lock without the toolchain wheels, or a header that is not the driver API, found only when
    FlashInfer's first link fails."""
    home = _fake_cuda_home(tmp_path, entry_points=0 if broken == "not the driver API" else 120)
    if broken != "no nvcc":
        (home / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
        (home / "bin" / "nvcc").chmod(0o755)
    if broken == "no cuda.h":
        (home / "include" / "cuda.h").unlink()
    result = subprocess.run([sys.executable, str(TOOLKIT), "--cuda-home", str(home), "--release", "13.0",
                             "--gcc-min", "13", "--arch", "12.0f"], capture_output=True, text=True)
    assert result.returncode == 1 and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_nvcc_of_another_release_is_refused(tmp_path):
    home = _fake_cuda_home(tmp_path)
    (home / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.5, V13.5.1'\n")
    (home / "bin" / "nvcc").chmod(0o755)
    with pytest.raises(cuda_toolkit.ToolkitError, match="nvcc is CUDA 13.5, the matrix states CUDA 13.0"):
        cuda_toolkit.check(home, "13.0", 13, ["12.0f"])


def test_a_host_compiler_older_than_needed_is_refused(tmp_path, monkeypatch):
    home = _fake_cuda_home(tmp_path)
    (home / "bin" / "nvcc").write_text("#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    (home / "bin" / "nvcc").chmod(0o755)
    with pytest.raises(cuda_toolkit.ToolkitError, match=r"g\+\+ [\d.]+ is older than GCC 99"):
        cuda_toolkit.check(home, "13.0", 99, ["12.0f"])


# ---- the FlashInfer module set ------------------------------------------------------------------------

MODULES = [("sparse_mla_sm120", "flashinfer.jit.mla:a"), ("fused_moe_120", "flashinfer.jit.b:c"),
           ("sampling", "flashinfer.jit.sampling:gen_sampling_module")]


def test_a_named_set_selects_its_modules_and_full_is_every_one():
    assert aot.select(MODULES, "full", ["ci=sampling"]) == MODULES
    assert aot.select(MODULES, "ci", ["ci=sampling"]) == [MODULES[2]]


@pytest.mark.parametrize("wanted,sets,message", [
    ("nightly", ["ci=sampling"], "module set 'nightly' is not one of ci, full"),
    ("ci", ["ci=sampler"], "names sampler, which no --module defines"),
    ("ci", ["ci="], "expected NAME=module,module"),
])
def test_a_bad_module_set_is_refused(wanted, sets, message):
    with pytest.raises(aot.AotError, match=message):
        aot.select(MODULES, wanted, sets)


def test_the_ci_set_is_a_build_argument_recorded_in_labels_and_notes():
    """Catches: a CI image (one module prebuilt) mistaken for a release image."""
    prov = provenance.current()
    release = plan.make(M, SM120, prov)
    assert release.build_args["FLASHINFER_MODULE_SET"] == "full"
    assert release.labels["io.dsv4-flash.flashinfer.module-set"] == "full"
    ci = plan.make(M, SM120, prov, flashinfer_modules="ci")
    assert ci.build_args["FLASHINFER_MODULE_SET"] == "ci" and ci.labels["io.dsv4-flash.flashinfer.module-set"] == "ci"
    assert any("not a release image" in n for n in ci.notes)
    with pytest.raises(UserError) as exc:
        plan.make(M, SM120, prov, flashinfer_modules="tiny")
    assert exc.value.exit_code == 2 and "has the sets full, ci" in str(exc.value)
    with pytest.raises(UserError, match="target cpu has no FlashInfer modules"):
        plan.make(M, CPU, prov, flashinfer_modules="ci")
    assert "FLASHINFER_MODULE_SET" not in plan.make(M, CPU, prov).build_args


# ---- the entrypoint: host driver and --version ---------------------------------------------------------

def _defaults(target) -> dict:
    return json.loads(json.dumps(target.serve_defaults()))


@pytest.mark.parametrize("found,refused", [("575.57.08", True), ("580.65.05", True), ("580.65.06", False),
                                           ("590.44.01", False), (None, False)])
def test_a_driver_too_old_for_cuda_13_is_refused_naming_both(found, refused):
    """Catches: an image without NVIDIA's forward-compatibility libraries starting on an R575 driver and failing
    at the first CUDA call with cudaErrorInsufficientDriver."""
    if not refused:
        ep.check_driver(_defaults(SM120), found)
        return
    with pytest.raises(ep.EntrypointError) as exc:
        ep.check_driver(_defaults(SM120), found)
    assert exc.value.exit_code == ep.EXIT_BAD_OVERRIDE
    assert found in str(exc.value) and "580.65.06" in str(exc.value) and "CUDA 13.0" in str(exc.value)
    ep.check_driver(_defaults(CPU), found)  # the cpu image has no CUDA of its own to check


def test_the_driver_is_read_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '575.57.08'\necho '575.57.08'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert ep.gpu_driver_version() == "575.57.08"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\n")
    assert ep.gpu_driver_version() is None


def test_version_says_which_flashinfer_modules_are_prebuilt(tmp_path):
    record = tmp_path / "flashinfer-module-set"
    record.write_text("ci\n")
    line = ep.version_line(_defaults(SM120), record)
    assert line.startswith("dsv4-flash sm120 (build ") and "module set ci (sampling): NOT a release image" in line
    assert "sparse_mla_sm120" in line and "fused_moe_120" in line
    record.write_text("full\n")
    assert "module set full (sparse_mla_sm120, fused_moe_120, sampling)" in ep.version_line(_defaults(SM120), record)
    assert "NOT a release image" in ep.version_line(_defaults(SM120), tmp_path / "missing")
    assert ep.version_line(_defaults(CPU), record) == f"dsv4-flash cpu (build {CPU.build_id()})"


def test_version_on_a_broken_defaults_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "serve.json"
    bad.write_text("[1, 2]")
    assert ep.main(["--version"], env={}, defaults_path=bad) == ep.EXIT_BAD_OVERRIDE
    err = capsys.readouterr().err
    assert "not a JSON object" in err and err.count("\n") == 1


def test_the_entrypoint_named_again_after_the_image_is_the_entrypoint(capsys):
    """`docker run --rm IMAGE dsv4-serve --print-command` (the image's ENTRYPOINT is dsv4-serve already)."""
    path = REPO_ROOT / SM120.serve_defaults_path
    assert ep.main(["dsv4-serve", "--print-command"], env={}, defaults_path=path) == 0
    assert capsys.readouterr().out.startswith(f"vllm serve {SM120.serve.model} ")
    assert ep.main(["dsv4-serve", "dsv4-serve"], env={}, defaults_path=path) == ep.EXIT_BAD_OVERRIDE


def test_cubins_are_baked_only_for_a_set_that_loads_them():
    """Catches: CI's module set (sampling) fetching NVIDIA's trtllm-gen artifacts it never loads (the artifact
    server is not reachable from our machines), or a release set that leaves them out."""
    packages = [["TRTLLM_GEN_BMM", "path/", "ab" * 32]]
    needed = ["TRTLLM_GEN_BMM=fused_moe_trtllm_sm100"]
    modules = [("fused_moe_trtllm_sm100", "flashinfer.jit.fused_moe:x"), *MODULES[2:]]
    assert aot.cubins_for(packages, needed, aot.select(modules, "full", ["ci=sampling"])) == [tuple(packages[0])]
    assert aot.cubins_for(packages, needed, aot.select(modules, "ci", ["ci=sampling"])) == []
    assert aot.cubins_for(packages, [], None) == [tuple(packages[0])]
    with pytest.raises(aot.AotError, match="no --needed-by says which modules load it"):
        aot.cubins_for(packages, [], aot.select(modules, "full", []))
    assert SM100.flashinfer.cubin_packages[0].needed_by == ("fused_moe_trtllm_sm100",)


def test_repro_of_an_sm_target_uses_ci_s_module_set_unless_told():
    from dsv4_images import repro
    assert repro.default_module_set(SM120) == "ci" and repro.default_module_set(CPU) is None
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "repro", "--arch", "cpu",
                             "--flashinfer-modules", "Bad Set"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--flashinfer-modules" in result.stderr and result.stderr.count("\n") == 1
