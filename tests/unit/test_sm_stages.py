"""The sm Dockerfiles' own shell steps, executed here with bash (no Docker): the GCC check, the refusal of
unresolved pins, an external archive's download and sha256 check, the check that CMake fetched nothing; and
what each stage is given (arch list, build type, labels, the checker bind-mounted and never copied)."""

import gzip
import hashlib
import io
import re
import subprocess
import tarfile

import pytest

from dsv4_images import matrix, render
from tests.support.fetch_lint import instructions
from tests.support.local_files import served_directory

M = matrix.load()
SM = M.resolve("sm120")


def runs(text: str, stage: str) -> list[str]:
    return [args for _, kw, args, s in instructions(text) if kw == "RUN" and s == stage]


def bash(command: str, env: dict | None = None, cwd=None):
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("version,ok", [("12.2.0", False), ("13.3.0", True), ("14.1.0", True)])
def test_the_gcc_check_refuses_an_older_compiler_with_one_clear_line(version, ok, tmp_path):
    check = next(r for r in runs(render.render_dockerfile(M, SM), "build-tools") if "g++ -dumpfullversion" in r)
    (tmp_path / "g++").write_text(f"#!/bin/sh\necho {version}\n")
    (tmp_path / "g++").chmod(0o755)
    result = bash(check, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (result.returncode == 0) is ok
    if not ok:
        assert result.stderr.strip() == (f"error: vLLM 0.33.0 needs GCC >= {SM.vllm.compile.gcc_min} to compile its "
                                         f"CUDA extensions (C++20 <format>); this build base has g++ {version}")


def test_the_unresolved_refusal_runs_as_one_line_and_fails():
    refusal = runs(render.render_dockerfile(M, SM), "vllm-externals")[0]
    result = bash(refusal)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: 18 of 19 sources") and "`python build.py resolve-externals`" in result.stderr


@pytest.fixture
def archive_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with served_directory(root) as url:
        yield root, url


def test_an_archive_is_unpacked_only_when_its_tar_has_the_pinned_sha256(archive_server, tmp_path):
    root, url = archive_server
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("qutlass-c/qutlass/csrc/bindings.cpp")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"x;\n"))
    pin = SM.external("qutlass").model_copy(update={"tar_sha256": hashlib.sha256(raw.getvalue()).hexdigest()})
    (root / pin.archive).parent.mkdir(parents=True)
    (root / pin.archive).write_bytes(gzip.compress(raw.getvalue()))
    t = SM.model_copy(update={"externals": (pin,)})
    step = runs(render.render_dockerfile(M, t), "vllm-externals")[0].replace("/externals/", f"{tmp_path}/externals/")
    env = {"PATH": "/usr/bin:/bin", "VLLM_EXTERNALS_URL": url}
    result = bash(step, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "externals" / "qutlass" / "qutlass" / "csrc" / "bindings.cpp").read_text() == "x;\n"
    wrong = runs(render.render_dockerfile(M, SM.model_copy(update={"externals": (pin.model_copy(update={"tar_sha256": "0" * 64}),)})),
                 "vllm-externals")[0].replace("/externals/", f"{tmp_path}/other/")
    result = bash(wrong, env=env, cwd=tmp_path)
    assert result.returncode == 1 and f"holds a tar with sha256 {pin.tar_sha256}, matrix.toml pins {'0' * 64}" in result.stderr
    assert not (tmp_path / "other" / "qutlass" / "qutlass").exists()


def test_the_compile_fails_when_cmake_fetched_a_source_itself(tmp_path):
    compile_run = next(r for r in runs(render.render_dockerfile(M, SM), "vllm-compile") if "setup.py bdist_wheel" in r)
    after = compile_run.split("--py-limited-api=cp38 && ", 1)[1]  # what runs once the wheel is built
    deps = tmp_path / ".deps"
    (deps / "cutlass-subbuild").mkdir(parents=True)  # FetchContent makes these even for a handed-over tree
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "vllm-0.33.0-cp38-abi3-linux_x86_64.whl").write_bytes(b"")
    env = {"PATH": "/usr/bin:/bin", "FETCHCONTENT_BASE_DIR": str(deps)}
    assert bash(after.replace("/dist/", f"{tmp_path}/dist/"), env=env).returncode == 0
    (deps / "deepgemm-src").mkdir()
    result = bash(after.replace("/dist/", f"{tmp_path}/dist/"), env=env)
    assert result.returncode == 1 and "error: vLLM's CMake populated deepgemm-src in" in result.stderr


@pytest.mark.parametrize("target", ["sm100", "sm120"])
def test_what_each_stage_is_given(target):
    t = M.resolve(target)
    text = render.render_dockerfile(M, t)
    assert f"\nARG VLLM_SOURCE={t.vllm.source}\n" in text
    assert f"\n# hadolint ignore=DL3006\nFROM vllm-from-${{VLLM_SOURCE}} AS vllm-dist\n" in text
    assert "ARG VLLM_SOURCE\nENV DSV4_VLLM_SOURCE=${VLLM_SOURCE}\n" in text
    assert 'io.dsv4-flash.vllm.source="${DSV4_VLLM_SOURCE}"' in text
    check = f"python /tmp/sass_check.py /dist/vllm-*.whl {' '.join(t.sass_check_args())}"
    assert sum(check in r for r in runs(text, "vllm-compile") + runs(text, "vllm-from-wheel")) == 2
    assert "sass_check.py" not in "".join(a for _, kw, a, _ in instructions(text) if kw in ("COPY", "ADD"))
    assert "apt-get" not in text  # the bootstrapped base carries the compile's packages too
    assert set(t.vllm.compile.packages) | set(t.toolchain.build_packages) <= set(t.base_packages())
    assert not t.vllm.sass.check_packages  # cuobjdump is the build lock's wheel
    (toolkit,) = [r for r in runs(text, "build-env") if "cuda_toolkit.py" in r]
    assert f"--gcc-min {t.vllm.compile.gcc_min}" in toolkit and "/opt/build-venv/bin/cuobjdump" in toolkit
    assert [a for a in t.compile_archs] == re.findall(r"--arch (\S+)", toolkit)
    wheel_stage = runs(text, "vllm-from-wheel")
    assert f"--mount=type=bind,source={t.lock_paths['wheel']}" in wheel_stage[0]  # vLLM's wheel and cuobjdump's
    assert "--target /opt/sass-tools /tmp/wheels/nvidia_cuda_cuobjdump-" in wheel_stage[0]
    assert "pip install --no-deps --no-index" in runs(text, "vllm-install")[0]


def test_the_cpu_image_records_its_source_without_the_sm_machinery():
    text = render.render_dockerfile(M, M.resolve("cpu"))
    assert "ENV DSV4_VLLM_SOURCE=wheel" in text and "VLLM_SOURCE=" not in text.replace("DSV4_VLLM_SOURCE", "")
    assert not re.search(r"AS (vllm-dist|vllm-compile|vllm-from-wheel)\b", text)
