"""`.dockerignore` keeps a plain `docker build .` context to what the images need, and nothing they need is left out."""

import re
import shlex
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths

from dsv4_images import REPO_ROOT, matrix, render

M = matrix.load()


def _context(root: Path) -> set[str]:
    patterns = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return {p for p in exclude_paths(str(root), patterns) if (root / p).is_file()}


def test_the_context_holds_every_file_each_target_needs_and_nothing_else():
    context = _context(REPO_ROOT)
    needed = {rel for t in M.targets.values() for rel in t.context_files()}
    assert needed <= context, needed - context
    # Docker sends .dockerignore itself along (and reads it); nothing else beyond what the images need.
    assert context - needed == {".dockerignore"}, "files in the build context that no image needs"


def test_a_dev_checkout_s_venv_tests_and_git_stay_out(tmp_path):
    (tmp_path / ".dockerignore").write_text((REPO_ROOT / ".dockerignore").read_text())
    for rel in (".venv/lib/big.so", ".git/objects/x", "tests/unit/test_x.py", "reports/r.json",
                "dsv4_images/cli.py", "Dockerfile.sm120", "locks/sm120.txt", "patches/v/0001-a.patch"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert _context(tmp_path) == {".dockerignore", "Dockerfile.sm120", "locks/sm120.txt", "patches/v/0001-a.patch"}


def _sources(dockerfile: str) -> set[str]:
    """What a Dockerfile takes from the build context: COPY sources and bind-mount sources (not --from= ones)."""
    text = dockerfile.replace("\\\n", " ")
    used = set()
    for line in text.splitlines():
        words = shlex.split(line) if line.startswith("COPY ") else []
        if words and not any(w.startswith("--from=") for w in words):
            used |= {w for w in words[1:-1] if not w.startswith("--")}
    for mount in re.findall(r"--mount=(\S+)", text):
        opts = dict(o.split("=", 1) for o in mount.split(",") if "=" in o)
        if opts.get("type") == "bind" and "from" not in opts:
            used.add(opts["source"])
    return used


@pytest.mark.parametrize("target", list(M.targets))
def test_the_context_files_are_what_the_dockerfile_copies_or_mounts(target):
    """builder.py sends exactly Target.context_files(): a file the Dockerfile needs but the list lacks fails the
    build, and a listed file it never uses is context for nothing."""
    t = M.resolve(target)
    used = _sources(render.render_all(M)[t.dockerfile])
    assert used and used == set(t.context_files()) - {t.dockerfile}
