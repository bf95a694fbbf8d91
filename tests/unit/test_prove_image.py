"""prove --image's host side without Docker: the mounts and path mapping, how the image's answers are compared
with the venv's, the checkpoint the preflight is shown, and the command line. The containers themselves run in
tests/integration/test_sm_image.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT
from dsv4_images.errors import UserError
from dsv4_images.in_image import checkpoint
from dsv4_images.prove import image
from dsv4_images.prove.report import Report


def test_every_mounted_path_maps_inside_and_back(tmp_path):
    """Catches: a worker request naming a host path the container cannot see (or, under /root, traverse)."""
    mounts = image.Mounts(tmp_path / "work", Path("/root/.cache/x/pristine"))
    fixture = image.FIXTURES / "models" / "dsv4-flash-nvfp4-fp8-mtp"
    assert mounts.inside(fixture) == Path("/prove/fixtures/models/dsv4-flash-nvfp4-fp8-mtp")
    assert mounts.inside(Path("/root/.cache/x/pristine/vllm/a.py")) == Path("/prove/pristine/vllm/a.py")
    assert mounts.inside(tmp_path / "work") == Path("/prove/work")
    with pytest.raises(UserError, match="not in a mounted directory"):
        mounts.inside(Path("/etc/passwd"))
    back = image._as_host({"model": "/prove/fixtures/models/m", "sizes": [1, "/prove/work/x"], "other": "/prover"},
                          mounts.mapping())
    assert back == {"model": f"{image.FIXTURES}/models/m", "sizes": [1, f"{tmp_path / 'work'}/x"], "other": "/prover"}
    run = mounts.docker_run("img", ["--entrypoint", "python"])
    assert run[:8] == ["docker", "run", "--rm", "--network", "none", "--user", image.UID, "--shm-size"]
    assert f"{tmp_path / 'work'}:/prove/work:rw" in run and f"{REPO_ROOT / 'patches'}:/prove/patches:ro" in run
    assert run[-1] == "img"


def _results(config: dict, ok: bool = True, backends: str = "FLASHINFER_CUTLASS") -> dict:
    return {"12.0": {"cases": {"default": {"ok": ok, "config": config}}, "schemes": {"a": 1},
                     "backends": {"moe": backends}}}


def test_the_image_must_answer_as_the_venv_did(tmp_path):
    """Catches: an image whose vLLM resolves another config, backend or verdict than the one prove checked."""
    mounts = image.Mounts(tmp_path)
    venv = _results({"served_model_name": f"{image.FIXTURES}/m", "max_model_len": 16384})
    same = _results({"served_model_name": "/prove/fixtures/m", "max_model_len": 16384})
    report = Report("sm120")
    image.agreement(report, venv, same, mounts)
    image.agreement(report, venv, _results({"served_model_name": "/prove/fixtures/m", "max_model_len": 8192}), mounts)
    image.agreement(report, venv, _results({}, ok=False), mounts)
    image.agreement(report, venv, _results({"served_model_name": "/prove/fixtures/m", "max_model_len": 16384},
                                           backends="MARLIN"), mounts)
    assert [line.status for line in report.lines] == ["PASS", "FAIL", "FAIL", "FAIL"]
    assert "max_model_len: 16384 vs 8192" in report.lines[1].detail
    assert "venv accepts" in report.lines[2].detail and "backends" in report.lines[3].detail


def test_the_preflight_is_shown_a_checkpoint_it_accepts(tmp_path):
    """Catches: an in-image preflight run that can only fail (the fixture names shards it does not have)."""
    with pytest.raises(checkpoint.Refusal, match="shard"):
        checkpoint.check_mtp(str(image.FIXTURES / "models" / "dsv4-flash-nvfp4-fp8-mtp"), {}, None)
    made = image.checkpoint_with_shards(tmp_path / "ck")
    found = checkpoint.check_mtp(str(made), {}, "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP")
    assert "all BF16/F32" in found and "2 shard header(s) read" in found
    assert (made / "config.json").read_text() == (image.FIXTURES / "models" / "dsv4-flash-nvfp4-fp8-mtp" /
                                                  "config.json").read_text()


@pytest.mark.parametrize("args,message", [
    (["--steps", "env,image"], "the image step needs --image IMAGE"),
    (["--image", "x:y", "--steps", "env,engine"], "--image needs the image step"),
    (["--image", "bad image"], "is not an image reference"),
    (["--image", "-1"], "is not an image reference"),
])
def test_prove_image_arguments_are_one_line(args, message):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "prove", "--arch", "sm120", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_image_of_another_target_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(image, "inspect", lambda ref: {"Config": {"Labels": {"io.dsv4-flash.target": "cpu"},
                                                                  "Env": ["CUDA_HOME=/x"]}})
    from dsv4_images import matrix
    from dsv4_images.prove.settings import from_target
    pt = from_target(matrix.load().resolve("sm120"))
    with pytest.raises(UserError, match="built for target 'cpu', not sm120"):
        image.prepare(None, "some:image", pt, tmp_path)
    wrapper_env = {"Config": {"Labels": {"io.dsv4-flash.target": "sm120"}, "Env": []}}
    monkeypatch.setattr(image, "inspect", lambda ref: wrapper_env)
    with pytest.raises(UserError, match="sets no CUDA_HOME"):
        image.prepare(None, "some:image", pt, tmp_path)
