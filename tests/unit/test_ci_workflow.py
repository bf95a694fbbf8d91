"""The GitHub Actions workflow: valid (actionlint), installed unchanged, and driven by build.py's matrix."""

import copy
from concurrent.futures import ThreadPoolExecutor
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from dsv4_images import REPO_ROOT, matrix

SOURCE, INSTALLED = REPO_ROOT / "ci" / "images.yml", REPO_ROOT / ".github" / "workflows" / "images.yml"
WORKFLOW = yaml.safe_load(SOURCE.read_text())


def test_actionlint_passes_on_the_workflow():
    actionlint = shutil.which("actionlint") or str(REPO_ROOT / ".venv" / "bin" / "actionlint")
    result = subprocess.run([actionlint, "-no-color", str(INSTALLED.relative_to(REPO_ROOT))], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    actionlint = shutil.which("actionlint") or str(REPO_ROOT / ".venv" / "bin" / "actionlint")
    broken = tmp_path / "broken.yml"
    broken.write_text(SOURCE.read_text().replace("${{ steps.build.outputs.digest }}", "${{ steps.no_such_step.outputs.digest }}"))
    result = subprocess.run([actionlint, "-no-color", str(broken)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "no_such_step" in result.stdout


def test_the_installed_workflow_is_the_source():
    assert INSTALLED.read_bytes() == SOURCE.read_bytes()


def test_the_workflow_matrix_is_dsv4_images_matrix_json():
    jobs = WORKFLOW["jobs"]
    step = next(s for s in jobs["matrix"]["steps"] if s.get("id") == "matrix")
    assert "dsv4-images matrix --json --kind cuda --compact" in step["run"]
    produced = json.loads(matrix.load().as_json(kind="cuda"))
    for name in ("build", "gpu-verify"):
        assert jobs[name]["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.cuda) }}"
        used = set(re.findall(r"(?<![.\w])matrix\.(\w+)", json.dumps(jobs[name])))
        for entry in produced["include"]:
            assert used <= set(entry), (name, used - set(entry))
    text = SOURCE.read_text()
    for entry in produced["include"]:  # no build target typed twice (the cpu target is built by the tests)
        assert not re.search(rf"\b{entry['target']}\b", text), entry["target"]


def test_the_gpu_build_runs_the_commands_ci_runs_here_and_pushes_what_it_proved():
    """Catches: a GitHub build that makes the sm image another way (buildx on NVIDIA's base) than the image CI
    builds and proves here, or pushes something other than what it proved."""
    build = WORKFLOW["jobs"]["build"]
    step = next(s for s in build["steps"] if s.get("id") == "build")
    run = step["run"]
    assert 'SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)' in run
    order = [run.index(c) for c in ('./dev build --arch "$TARGET" --owner "$owner" --reproducible',
                                    './dev prove --arch "$TARGET" --image "$tag"',
                                    './dev build --arch "$TARGET" --owner "$owner" --push')]
    assert order == sorted(order)
    assert not [s for s in build["steps"] if "docker/build-push-action" in s.get("uses", "")]
    assert not [s for s in build["steps"] if "setup-buildx" in s.get("uses", "")]
    record = next(s for s in build["steps"] if s.get("name") == "record the digest")
    assert record["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    verify = WORKFLOW["jobs"]["gpu-verify"]
    assert verify["runs-on"] == ["self-hosted", "${{ matrix.verify_runner }}"]
    assert "--image" in verify["steps"][-1]["run"]


def test_every_action_is_pinned_by_commit():
    for ref in re.findall(r"uses:\s*(\S+)", SOURCE.read_text()):
        assert re.search(r"@[0-9a-f]{40}$", ref), ref


# ---- every job's steps, run here ------------------------------------------------------------------

# What only a hosted or GPU runner has, replaced (by step name or id); everything else runs as written.
STANDINS = {
    "room for a 7 GB image": "true",  # deletes a hosted runner's preinstalled SDKs with sudo
    "room for a 20 GB image": "true",
    # the sm build itself runs in tests/integration/test_sm_image.py; here its plan, and the outputs it writes
    "build": './dev build --arch "$TARGET" --owner acme --dry-run --json > plan.json && '
             'echo "digest=sha256:' + "0" * 64 + '" >> "$GITHUB_OUTPUT" && echo "image=ghcr.io/acme/dsv4-flash" >> "$GITHUB_OUTPUT"',
    "ref": 'echo "image=ghcr.io/acme/dsv4-flash@sha256:' + "0" * 64 + '" >> "$GITHUB_OUTPUT"',  # registry lookup
}
CUDA_ENTRY = json.loads(matrix.load().as_json(kind="cuda"))["include"][0]


def _run(job: str, workflow: dict | None = None, **kwargs):
    from tests.support.workflow import run_job
    return run_job(workflow or WORKFLOW, job, REPO_ROOT, standins=STANDINS, **kwargs)


@pytest.mark.slow
def test_every_job_runs_its_steps_in_order_in_a_fresh_clone():
    """Each job's `run:` steps, in order, in a clean clone with a fresh venv (see tests/support/workflow.py)."""
    matrix_job = _run("matrix")
    assert matrix_job.returncode == 0, "\n".join(matrix_job.log)
    produced = json.loads(matrix_job.outputs["cuda"])
    assert produced == json.loads(matrix.load().as_json(kind="cuda", compact=True))
    jobs = ("checks", "cpu", "build", "gpu-verify")
    with ThreadPoolExecutor(2) as pool:  # two at a time: each is its own clone and venv
        runs = dict(zip(jobs, pool.map(lambda job: _run(job, matrix=CUDA_ENTRY, needs={"matrix": matrix_job.outputs}),
                                       jobs)))
    for job, run in runs.items():
        assert run.returncode == 0, f"{job} failed at {run.failed_step}:\n" + "\n".join(run.log)[-6000:]
    # the GPU selection collected the target's verify test
    assert f"test_verify_a_gpu_image_with_the_card_thresholds[{CUDA_ENTRY['target']}]" in "\n".join(runs["gpu-verify"].log)
    assert set(runs["build"].skipped_uses) >= {"docker/login-action"}


@pytest.mark.slow
def test_a_job_without_its_install_step_fails():
    broken = copy.deepcopy(WORKFLOW)
    steps = broken["jobs"]["matrix"]["steps"]
    broken["jobs"]["matrix"]["steps"] = [s for s in steps if "install the project" not in s.get("name", "")]
    assert len(broken["jobs"]["matrix"]["steps"]) == len(steps) - 1
    run = _run("matrix", broken)
    assert run.returncode != 0 and run.failed_step == "matrix"
    assert "dsv4-images: command not found" in "\n".join(run.log)


@pytest.mark.slow
def test_the_gpu_job_fails_when_its_selection_collects_no_test():
    broken = copy.deepcopy(WORKFLOW)
    step = broken["jobs"]["gpu-verify"]["steps"][-1]
    step["run"] = step["run"].replace("test_verify_a_gpu_image_with_the_card_thresholds", "test_no_such_test")
    run = _run("gpu-verify", broken, matrix=CUDA_ENTRY)
    assert run.returncode == 5, "\n".join(run.log)[-3000:]  # pytest: no tests collected


def test_the_gpu_verify_test_fails_instead_of_skipping_on_a_gpu_runner():
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/integration/test_cpu_image.py", "-k",
                             "test_verify_a_gpu_image_with_the_card_thresholds and sm120"],
                            cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ, "DSV4_REQUIRE_GPU": "1"},
                            timeout=300)
    assert result.returncode == 1 and "1 failed" in result.stdout, result.stdout[-2000:]
    assert "DSV4_REQUIRE_GPU is set but no sm120 image given" in result.stdout
