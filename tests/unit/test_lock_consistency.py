"""`pip check` for every lock without installing it: uv re-resolves each lock's pins (with the wheel locked on
its own, as the image installs them) and must find them consistent and complete."""

import pytest

from dsv4_images import REPO_ROOT, lockcheck, matrix

pytestmark = pytest.mark.network
M = matrix.load()
SETS = [(t.name, label, rels) for t in M.targets.values() for label, rels in lockcheck.pin_sets(t).items()]


@pytest.mark.parametrize("target,label,rels", SETS, ids=[f"{t}-{label}" for t, label, _ in SETS])
def test_every_lock_passes_pip_check(target, label, rels):
    assert lockcheck.problems(M.resolve(target), rels) == []


def test_the_sm_runtime_lock_is_checked_together_with_vllms_wheel():
    assert lockcheck.pin_sets(M.resolve("sm120"))["runtime"] == ["locks/sm120.txt", "locks/sm120.wheel.txt"]
    assert not M.resolve("sm120").vllm.overrides and not M.resolve("sm120").vllm.accepted_unmet


def test_the_old_certifi_override_is_caught(tmp_path):
    """What the sm locks held until the override was dropped: vllm asks for certifi >= 2026.10.19."""
    t = M.resolve("sm120")
    (tmp_path / "locks").mkdir()
    for rel in lockcheck.pin_sets(t)["runtime"]:
        text = (REPO_ROOT / rel).read_text()
        (tmp_path / rel).write_text(text.replace("certifi==2026.10.19.post1", "certifi==2026.10.18"))
    found = lockcheck.problems(t, lockcheck.pin_sets(t)["runtime"], root=tmp_path)
    assert len(found) == 1 and "certifi" in found[0] and "vllm" in found[0], found


def test_a_missing_dependency_is_caught(tmp_path):
    """markupsafe is in the build lock only because jinja2 requires it."""
    t = M.resolve("sm120")
    (tmp_path / "locks").mkdir()
    for rel in lockcheck.pin_sets(t)["build"]:
        lines = (REPO_ROOT / rel).read_text().split("\n")
        start = next(i for i, line in enumerate(lines) if line.startswith("markupsafe=="))
        end = next(i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" "))
        (tmp_path / rel).write_text("\n".join(lines[:start] + lines[end:]))
    found = lockcheck.problems(t, lockcheck.pin_sets(t)["build"], root=tmp_path)
    assert any("lacks markupsafe==" in line for line in found), found
