import shutil
import subprocess

import pytest

from dsv4_images import REPO_ROOT, matrix


@pytest.mark.parametrize("target", list(matrix.load().targets))
def test_hadolint_passes_on_the_generated_dockerfile(target):
    hadolint = shutil.which("hadolint") or str(REPO_ROOT / ".venv" / "bin" / "hadolint")
    result = subprocess.run([hadolint, "--no-color", f"Dockerfile.{target}"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    hadolint = shutil.which("hadolint") or str(REPO_ROOT / ".venv" / "bin" / "hadolint")
    (tmp_path / "Dockerfile").write_text("FROM debian\nRUN cd /tmp && apt-get install -y curl\n")
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode != 0 and "DL3003" in result.stdout
