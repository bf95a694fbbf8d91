"""The sm120 image built here, from the Debian base we bootstrap and CUDA from PyPI, and proven inside itself
(issue 16): `build.py build --arch sm120 --flashinfer-modules ci` (one FlashInfer module compiled for real),
then `build.py prove --arch sm120 --image IMAGE` in containers of it (no GPU, no network, an arbitrary UID,
our libcuda stub mounted for the run only), which must agree with prove's venv. Then images with one runtime
step broken (derived from the built one by `docker commit`, so no second build) must fail the named check.

$DSV4_TEST_SM120_IMAGE reuses an image already built."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from dsv4_images import REPO_ROOT, builder, matrix, plan, provenance
from dsv4_images.prove import command as prove
from dsv4_images.prove import env, image
from dsv4_images.prove.report import Report
from dsv4_images.prove.settings import from_target
from tests.support.prove_lines import assert_every_line_passes

TEST_IMAGE = "dsv4-flash-test"
M = matrix.load()
SM120 = M.resolve("sm120")

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def sm120_image(docker_client, report):
    reuse = os.environ.get("DSV4_TEST_SM120_IMAGE")
    if reuse:
        return reuse
    build = plan.make(M, SM120, provenance.current(), image=TEST_IMAGE, tags=["sm120-ci"], flashinfer_modules="ci")
    started, lines = time.monotonic(), []
    result = builder.execute(docker_client, M, build, emit=lines.append)
    image = docker_client.images.get(build.tags[0])
    report["sm120_build"] = {"seconds": round(time.monotonic() - started, 1), "steps": result.steps,
                             "cached_steps": result.cached_steps, "stages": result.stages, "image_size_bytes": image.attrs["Size"],
                             "flashinfer_module_set": "ci",
                             "step_seconds": [line for line in lines if line.startswith("timing:")]}
    return build.tags[0]


@pytest.fixture(scope="module")
def proven(sm120_image, report, tmp_path_factory):
    """`build.py prove --arch sm120 --image IMAGE` with every step, as a user runs it."""
    out = tmp_path_factory.mktemp("prove") / "sm120.json"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "build.py", "prove", "--arch", "sm120", "--image", sm120_image,
                             "--steps", ",".join(prove.STEPS), "--report", str(out)], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    data = json.loads(out.read_text()) if out.is_file() else {"ok": False, "lines": [], "steps_seconds": {}}
    report["prove_sm120_with_image_seconds"] = {"wall": round(time.monotonic() - started, 1), **data["steps_seconds"]}
    return result, data


def test_print_command_as_users_run_it(sm120_image):
    """The issue's own check: `docker run --rm IMAGE dsv4-serve --print-command` prints the target's command."""
    out = subprocess.run(["docker", "run", "--rm", sm120_image, "dsv4-serve", "--print-command"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    argv = shlex.split(out.stdout)
    assert argv[:3] == ["vllm", "serve", SM120.serve.model]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2" and "--disable-custom-all-reduce" in argv
    assert argv[argv.index("--moe-backend") + 1] == "auto"
    speculative = json.loads(argv[argv.index("--speculative-config") + 1])
    assert (speculative["method"], speculative["num_speculative_tokens"]) == ("mtp", 1)


def test_the_ci_image_says_it_is_not_a_release(sm120_image, docker_client):
    labels = docker_client.images.get(sm120_image).labels
    assert labels["io.dsv4-flash.flashinfer.module-set"] == "ci"
    out = subprocess.run(["docker", "run", "--rm", sm120_image, "--version"], capture_output=True, text=True, timeout=300)
    assert "module set ci (sampling): NOT a release image" in out.stdout, out.stdout + out.stderr[-300:]


def test_the_image_proves_inside_itself_and_agrees_with_the_venv(proven):
    result, data = proven
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    status = assert_every_line_passes(data, from_target(SM120))  # the venv steps, as for sm100
    for name in ("image.cuda-toolkit", "image.triton-launcher", "image.flashinfer-aot-lookup", "image.sass-installed",
                 "image.patches-applied", "image.imports-offline", "image.distribution-packages", "image.user",
                 "image.entrypoint.print-command", "image.entrypoint.preflight-only", "image.agrees-with-venv@12.0"):
        assert status.get(name) == "PASS", name


# ---- a broken runtime step fails its named check --------------------------------------------------------

BREAKAGES = {
    "host compiler removed": ("rm -f /usr/bin/g++ /usr/bin/g++-14 /usr/bin/x86_64-linux-gnu-g++-14", "image.cuda-toolkit"),
    "FlashInfer module left out of the wheel":
        ("rm -f /opt/venv/lib/python3.13/site-packages/flashinfer_jit_cache/*/sampling/sampling.so",
         "image.flashinfer-aot-lookup"),
    "patch 0001 not applied":
        ("cd /opt/venv/lib/python3.13/site-packages && patch -p1 -R --batch < /prove/patches/vllm-0.33.0/"
         "0001-compressed-tensors-is-static-input-scheme-bool.patch", "image.patches-applied"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_runtime_step_fails_its_named_check(sm120_image, docker_client, tmp_path, breakage):
    script, check = BREAKAGES[breakage]
    name = f"dsv4-flash-test:sm120-broken-{abs(hash(breakage)) % 10**8}"
    patches = str(REPO_ROOT / "patches")
    made = subprocess.run(["docker", "run", "--name", name.split(":")[1], "--user", "0:0", "--entrypoint", "bash",
                           "-v", f"{patches}:/prove/patches:ro", sm120_image, "-c", script],
                          capture_output=True, text=True, timeout=300)
    try:
        assert made.returncode == 0, made.stderr[-500:]
        subprocess.run(["docker", "commit", name.split(":")[1], name], check=True, capture_output=True, timeout=600)
        pt = from_target(SM120)
        mounts = image.prepare(env.ensure(pt), name, pt, tmp_path / "work")[1]
        result = Report("sm120")
        image.image_checks(result, name, pt, SM120, mounts, only=[check.removeprefix("image.")])
        assert [(line.name, line.status) for line in result.lines if line.name != "image.user"] == [(check, "FAIL")], \
            result.lines
    finally:
        subprocess.run(["docker", "rm", "-f", name.split(":")[1]], capture_output=True)
        subprocess.run(["docker", "rmi", "-f", name], capture_output=True)
