"""The GitHub Actions workflow: valid (actionlint), installed unchanged, and driven by build.py's matrix."""

import json
import re
import shutil
import subprocess

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


def test_the_workflow_matrix_is_build_py_matrix_json():
    jobs = WORKFLOW["jobs"]
    step = next(s for s in jobs["matrix"]["steps"] if s.get("id") == "matrix")
    assert "python build.py matrix --json --kind cuda --compact" in step["run"]
    produced = json.loads(matrix.load().as_json(kind="cuda"))
    for name in ("build", "gpu-verify"):
        assert jobs[name]["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.cuda) }}"
        used = set(re.findall(r"(?<![.\w])matrix\.(\w+)", json.dumps(jobs[name])))
        for entry in produced["include"]:
            assert used <= set(entry), (name, used - set(entry))
    text = SOURCE.read_text()
    for entry in produced["include"]:  # no build target typed twice (the cpu target is built by the tests)
        assert not re.search(rf"\b{entry['target']}\b", text), entry["target"]


def test_images_are_pushed_by_digest_with_cache_sbom_provenance_and_fixed_timestamps():
    build = WORKFLOW["jobs"]["build"]
    step = next(s for s in build["steps"] if s.get("id") == "build")
    w = step["with"]
    assert "rewrite-timestamp=true" in w["outputs"] and "push=true" in w["outputs"]
    assert w["sbom"] is True and w["provenance"] == "mode=max"
    assert "mode=max" in w["cache-to"] and w["cache-from"].startswith("type=registry")
    assert w["build-args"] == "${{ steps.plan.outputs.build-args }}" and w["tags"] == "${{ steps.plan.outputs.tags }}"
    plan = next(s for s in build["steps"] if s.get("id") == "plan")
    assert "SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)" in plan["run"] and "--dry-run --json" in plan["run"]
    verify = WORKFLOW["jobs"]["gpu-verify"]
    assert verify["runs-on"] == ["self-hosted", "${{ matrix.verify_runner }}"]
    assert "--image" in verify["steps"][-1]["run"]


def test_every_action_is_pinned_by_commit():
    for ref in re.findall(r"uses:\s*(\S+)", SOURCE.read_text()):
        assert re.search(r"@[0-9a-f]{40}$", ref), ref
