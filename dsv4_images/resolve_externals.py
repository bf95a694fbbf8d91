"""`build.py resolve-externals`: fill in matrix.toml the commit, tree and tar sha256 of every source vLLM's
CMake fetches, from GitHub. It runs where github.com is reachable; elsewhere it says so in one line.

For each pin: a tag is peeled to its commit (`git ls-remote`); the commit is fetched (depth 1) into a scratch
repository and `tree` is its tree id; a submodule's repo and commit come from its parent's .gitmodules and
gitlink at the parent's pinned commit; `tar_sha256` is the sha256 of GitHub's archive of the commit,
gunzipped (what the build verifies), cross-checked against `git archive` of the same commit. A value matrix.toml
already holds must agree with GitHub (a moved tag, a wrong pin): a disagreement is an error, never an update.
Only missing values are written; `python build.py render` afterwards puts them into the Dockerfiles.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

from . import externals
from .errors import UserError
from .matrix import External, Matrix, load

GIT_TIMEOUT = 600
SHA1 = re.compile(r"^[0-9a-f]{40}$")


def _git(*args: str, cwd: Path | None = None, timeout: float = GIT_TIMEOUT, binary: bool = False):
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise UserError(f"git {args[0]} timed out after {timeout:.0f}s") from None
    if result.returncode != 0:
        last = (result.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise UserError(f"git {' '.join(args[:2])} failed: {last}")
    return result.stdout if binary else result.stdout.decode().strip()


def probe(base: str, repo: str) -> None:
    try:
        _git("ls-remote", "--heads", f"{base}/{repo}", timeout=30)
    except UserError as exc:
        raise UserError(f"cannot reach {base} to resolve vLLM's external sources ({exc}); run "
                        "`python build.py resolve-externals` where github.com is reachable") from None


def peel(base: str, repo: str, ref: str) -> str:
    """The commit a ref names: a 40-hex ref is itself, a tag is peeled (annotated tags too)."""
    if SHA1.match(ref):
        return ref
    out = _git("ls-remote", f"{base}/{repo}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}")
    lines = dict(reversed(line.split("\t")) for line in out.splitlines() if "\t" in line)
    commit = lines.get(f"refs/tags/{ref}^{{}}") or lines.get(f"refs/tags/{ref}")
    if not commit:
        raise UserError(f"{repo} has no tag {ref}")
    return commit


def fetch_commit(base: str, repo: str, commit: str, work: Path) -> Path:
    git_dir = work / (repo.replace("/", "+") + ".git")
    if not git_dir.exists():
        _git("init", "-q", "--bare", str(git_dir))
    _git("--git-dir", str(git_dir), "fetch", "-q", "--depth", "1", f"{base}/{repo}", commit)
    return git_dir


def repo_of(url: str, parent_repo: str) -> str:
    """owner/name from a .gitmodules URL on GitHub (absolute or relative to the parent)."""
    if url.startswith("../"):
        owner = parent_repo.split("/")[0]
        while url.startswith("../"):
            url = url[3:]
            if "/" not in url:
                return f"{owner}/{url.removesuffix('.git')}"
        return url.removesuffix(".git")
    m = re.match(r"^(?:https://github\.com/|git@github\.com:|git://github\.com/)([^/]+/[^/]+?)(?:\.git)?/?$", url)
    if not m:
        raise UserError(f"submodule URL {url} is not on GitHub: pin it by hand")
    return m.group(1)


def submodule(git_dir: Path, parent_commit: str, path: str, parent_repo: str) -> tuple[str, str]:
    """(repo, commit) of the submodule at `path` in the parent's commit."""
    entry = _git("--git-dir", str(git_dir), "ls-tree", parent_commit, "--", path)
    m = re.match(r"^160000 commit ([0-9a-f]{40})\t", entry)
    if not m:
        raise UserError(f"{parent_repo} at {parent_commit[:12]} has no submodule at {path}")
    with tempfile.NamedTemporaryFile("w", suffix=".gitmodules") as modules:
        modules.write(_git("--git-dir", str(git_dir), "show", f"{parent_commit}:.gitmodules"))
        modules.flush()
        paths = _git("config", "--file", modules.name, "--get-regexp", r"submodule\..*\.path")
        name = next((line.split(" ", 1)[0][len("submodule."):-len(".path")] for line in paths.splitlines()
                     if line.split(" ", 1)[1] == path), None)
        if name is None:
            raise UserError(f"{parent_repo}'s .gitmodules does not name {path}")
        url = _git("config", "--file", modules.name, f"submodule.{name}.url")
    return repo_of(url, parent_repo), m.group(1)


def github_tar_sha256(archive_base: str, repo: str, commit: str, work: Path) -> str:
    url = f"{archive_base}/{repo}/archive/{commit}.tar.gz"
    path = work / f"{repo.replace('/', '+')}-{commit}.tar.gz"
    try:
        with urllib.request.urlopen(url, timeout=300) as response, open(path, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"download of {url} failed: {getattr(exc, 'reason', exc)}") from None
    return externals.tar_sha256(path)


def git_archive_sha256(git_dir: Path, repo: str, commit: str) -> str:
    prefix = f"{repo.split('/')[1]}-{commit}/"
    data = _git("--git-dir", str(git_dir), "archive", "--format=tar", f"--prefix={prefix}", commit, binary=True)
    return hashlib.sha256(data).hexdigest()


def _agree(pin: External, values: dict) -> None:
    for key, value in values.items():
        held = getattr(pin, key)
        if held is not None and held != value:
            moved = " (the tag moved?)" if key == "commit" and not SHA1.match(pin.ref or "") else ""
            raise UserError(f"external {pin.name}: matrix.toml pins {key} {held}, GitHub says {value}{moved}")


def resolve_pins(pins: tuple[External, ...], base: str, archive_base: str, work: Path, emit) -> dict[str, dict]:
    """Pin name -> the values to write (only those missing); raises on any disagreement."""
    found: dict[str, dict] = {}
    fetched: dict[str, tuple[Path, str]] = {}  # pin name -> (git dir, commit)
    for pin in sorted(pins, key=lambda p: p.parent is not None):  # parents before their submodules
        if pin.parent:
            parent = next(p for p in pins if p.name == pin.parent)
            parent_dir, parent_commit = fetched[parent.name]
            repo, commit = submodule(parent_dir, parent_commit, pin.path, found[parent.name]["repo"])
        else:
            repo, commit = pin.repo, peel(base, pin.repo, pin.ref)
        _agree(pin, {"repo": repo, "commit": commit})
        git_dir = fetch_commit(base, repo, commit, work)
        fetched[pin.name] = (git_dir, commit)
        values = {"repo": repo, "commit": commit, "tree": _git("--git-dir", str(git_dir), "rev-parse", f"{commit}^{{tree}}"),
                  "tar_sha256": github_tar_sha256(archive_base, repo, commit, work)}
        local = git_archive_sha256(git_dir, repo, commit)
        if local != values["tar_sha256"]:
            emit(f"warning: {pin.name}: GitHub's archive differs from `git archive` ({local[:12]}...): "
                 ".gitattributes export-ignore/export-subst? The build verifies GitHub's, which is what is pinned")
        _agree(pin, values)
        found[pin.name] = values
        emit(f"{pin.name}: {repo} {commit} tree {values['tree'][:12]} tar sha256 {values['tar_sha256'][:16]}...")
    return found


def set_pin_values(text: str, table: str, name: str, values: dict[str, str], note: str) -> str:
    """matrix.toml with the pin's missing keys filled in (comments and layout kept)."""
    lines = text.splitlines(keepends=True)
    header = f'[[externals."{table}".pins]]'
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    for start in starts:
        end = next((j for j in range(start + 1, len(lines)) if lines[j].lstrip().startswith("[")), len(lines))
        block = lines[start:end]
        keys = {re.match(r"^(\w+)\s*=", line).group(1): i for i, line in enumerate(block) if re.match(r"^\w+\s*=", line)}
        if "name" not in keys or json.loads(block[keys["name"]].split("=", 1)[1]) != name:
            continue
        last = max(keys.values())
        for key, value in values.items():
            if key in keys:
                continue
            last += 1
            block.insert(last, f"{key} = {json.dumps(value)}\n")
        keys = {re.match(r"^(\w+)\s*=", line).group(1): i for i, line in enumerate(block) if re.match(r"^\w+\s*=", line)}
        evidence = json.loads(block[keys["evidence"]].split("=", 1)[1]) if "evidence" in keys else []
        entry = f"evidence = {json.dumps(evidence + [note])}\n"
        if "evidence" in keys:
            block[keys["evidence"]] = entry
        else:
            block.insert(max(keys.values()) + 1, entry)
        block = [line for line in block if not line.startswith("unresolved =")]
        return "".join(lines[:start] + block + lines[end:])
    raise UserError(f"matrix.toml has no pin {name} in [[{header[2:-2]}]]")


def main(matrix: Matrix, emit=print, base: str = externals.GITHUB, archive_base: str = externals.GITHUB) -> int:
    tables = {t.vllm.externals: t.externals for t in matrix.targets.values() if t.externals}
    if not tables:
        emit("resolve-externals: no target compiles with external sources")
        return 0
    first = next(p for pins in tables.values() for p in pins if p.repo)
    probe(base, first.repo)
    text = matrix.path.read_text()
    note = f"resolved by build.py resolve-externals from {base} on {date.today().isoformat()}"
    written = 0
    with tempfile.TemporaryDirectory(prefix="dsv4-externals-") as tmp:
        for table, pins in tables.items():
            found = resolve_pins(pins, base, archive_base, Path(tmp), emit)
            for pin in pins:
                missing = {k: v for k, v in found[pin.name].items() if getattr(pin, k) is None}
                if missing:
                    text = set_pin_values(text, table, pin.name, missing, f"{', '.join(missing)}: {note}")
                    written += 1
    if written:
        with tempfile.TemporaryDirectory() as tmp:  # validate before replacing the real file
            (Path(tmp) / "matrix.toml").write_text(text)
            if (matrix.path.parent / "patches").exists():
                (Path(tmp) / "patches").symlink_to(matrix.path.parent / "patches")
            load(Path(tmp) / "matrix.toml")
        matrix.path.write_text(text)
    emit(f"resolve-externals: {written} pins filled in {matrix.path.name}"
         + ("; run `python build.py render`" if written else "; every pin agrees with GitHub"))
    return 0
