"""The compile's external sources: pinned for everything vLLM 0.33.0's CMake fetches, handed over through its
overrides, refused in one line while unresolved, fetched and verified on the host, resolvable from GitHub
(here: from local repositories standing in for it), and a missed fetch fails loudly (executed with git
and with the build lock's CMake)."""

import gzip
import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT, download, externals, matrix, render, resolve_externals, sources, wheelhouse
from dsv4_images.errors import UserError
from tests.support.local_files import served_directory

M = matrix.load()
SM = M.resolve("sm120")


# ---- the pins against vLLM's own CMake ------------------------------------------------------------

@pytest.fixture(scope="module")
def cmake_tree(tmp_path_factory):
    return sources.extract(sources.fetch_sdist(SM), tmp_path_factory.mktemp("sdist"))


@pytest.mark.network
def test_every_source_vllms_cmake_clones_is_pinned_with_its_override(cmake_tree):
    # what a CUDA build includes: CMakeLists.txt, utils.cmake and the external projects it lists
    # (cmake/cpu_extension.cmake clones too, but only for VLLM_TARGET_DEVICE=cpu)
    listed = re.findall(r"include\((cmake/external_projects/[\w.]+\.cmake)\)", (cmake_tree / "CMakeLists.txt").read_text())
    files = [cmake_tree / "CMakeLists.txt", cmake_tree / "cmake" / "utils.cmake", *(cmake_tree / f for f in listed)]
    assert len(listed) == 9
    cloning = {f.relative_to(cmake_tree).as_posix() for f in files if "GIT_REPOSITORY" in f.read_text()}
    top = [p for p in SM.externals if not p.parent]
    assert cloning == {p.ref_in for p in top}, "a vLLM bump added or dropped a fetched source: pin it"
    for f in files:  # nothing fetched by URL, which these pins would not cover
        assert not re.search(r"FetchContent_Declare\([^)]*\bURL\b", f.read_text()), f
    for pin in top:
        text = (cmake_tree / pin.ref_in).read_text()
        assert pin.ref in text, f"{pin.ref_in} no longer names {pin.ref}"
        if pin.env:
            assert f"ENV{{{pin.env}}}" in text, f"{pin.ref_in} reads no {pin.env}"
        else:
            name = re.search(r"FetchContent_MakeAvailable\(([\w-]+)\)", text).group(1)
            assert pin.cmake_arg == f"FETCHCONTENT_SOURCE_DIR_{name.upper()}"
    for m in re.finditer(r"GIT_SUBMODULES ([^\n]+)", "".join(f.read_text() for f in files)):
        for path in re.findall(r'"?([\w./-]+)"?', m.group(1)):
            assert any(p.path == path for p in SM.externals if p.parent), f"submodule {path} is not pinned"


def test_both_sm_targets_share_the_pins_and_hand_each_tree_to_cmake():
    assert M.resolve("sm100").externals == SM.externals and len(SM.externals) == 19
    env = SM.compile_env()
    assert env["TRITON_KERNELS_SRC_DIR"] == "/externals/triton_kernels/python/triton_kernels/triton_kernels"
    assert env["CMAKE_ARGS"] == "-DFETCHCONTENT_SOURCE_DIR_VLLM-FLASH-ATTN=/externals/vllm-flash-attn"
    assert SM.external_dir(SM.external("deepgemm/third-party/cutlass")) == "/externals/deepgemm/third-party/cutlass"


def test_what_could_be_resolved_here_is_and_nothing_else_claims_to_be():
    resolved = [p.name for p in SM.externals if not p.missing]
    assert resolved == ["qutlass"]
    qutlass = SM.external("qutlass")
    assert (qutlass.commit, qutlass.tree) == ("e74319e3405ce6d71965732880f5dc1f52371f64", "7c522b19e1341e36c63c86bbd664981dda49cd5e")
    for pin in SM.externals:
        assert pin.missing or not pin.unresolved
        assert not pin.missing or pin.unresolved, f"{pin.name}: say why it is unresolved"


# ---- the vllm-externals stage ---------------------------------------------------------------------

def _stage(text: str, name: str) -> str:
    return text.split(f" AS {name}\n", 1)[1].split("\nFROM ", 1)[0]


def test_unresolved_pins_make_the_stage_refuse_in_one_line_naming_them_and_the_command():
    stage = _stage(render.render_dockerfile(M, SM), "vllm-externals")
    first_run = stage.split("\nRUN ", 1)[1].split("\nRUN ", 1)[0]
    message = re.search(r'echo "error: (.*)" >&2', first_run).group(1)
    assert "\n" not in message and "python build.py resolve-externals" in message and "--vllm wheel" in message
    for pin in SM.externals:
        assert (pin.name in message) == bool(pin.missing)
    assert '" >&2 \\\n    && exit 1\n' in first_run


def _fully_pinned(target):
    fake = lambda p, n: hashlib.sha256(f"{p.name}{n}".encode()).hexdigest()  # test data, not pins
    pins = tuple(p.model_copy(update={"repo": p.repo or "acme/sub", "commit": p.commit or fake(p, "c")[:40],
                                      "tar_sha256": p.tar_sha256 or fake(p, "t"), "unresolved": None})
                 for p in target.externals)
    return target.model_copy(update={"externals": pins})


def test_a_fully_pinned_target_downloads_and_checks_every_archive_instead():
    t = _fully_pinned(SM)
    stage = _stage(render.render_dockerfile(M, t), "vllm-externals")
    assert "resolve-externals" not in stage
    runs = stage.split("\nRUN ")[1:]
    assert len(runs) == len(t.externals)
    for pin, run in zip(t.externals, runs):
        assert f'"${{VLLM_EXTERNALS_URL}}/{pin.archive}"' in run and f'[ "$got" != "{pin.tar_sha256}" ]' in run
        assert f"--strip-components=1 -C {t.external_dir(pin)}" in run


# ---- host side: download once, verify the tar's sha256 ---------------------------------------------

def _targz(files: dict[str, bytes], prefix: str) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0), hashlib.sha256(raw.getvalue()).hexdigest()


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with served_directory(root) as url:
        yield root, url


def test_the_host_keeps_an_archive_only_when_its_tar_has_the_pinned_sha256(http_root, tmp_path, monkeypatch):
    root, url = http_root
    monkeypatch.setattr(download, "CACHE", tmp_path / "cache")
    data, tar_sha = _targz({"CMakeLists.txt": b"x\n"}, "qutlass-c")
    pin = SM.external("qutlass").model_copy(update={"tar_sha256": tar_sha})
    (root / pin.archive).parent.mkdir(parents=True)
    (root / pin.archive).write_bytes(data)
    path = externals.fetch_pin(pin, base=url, progress=lambda _: None)
    assert path.is_file() and externals.tar_sha256(path) == tar_sha
    assert externals.fetch_pin(pin, base="http://127.0.0.1:9", progress=lambda _: None) == path  # cached
    wrong = pin.model_copy(update={"tar_sha256": "0" * 64})
    with pytest.raises(UserError, match=r"^checksum mismatch for qutlass: .* holds a tar with sha256 " + tar_sha):
        externals.fetch_pin(wrong, base=url, progress=lambda _: None)
    assert not externals.cached_path(wrong).exists() and not list(externals.cached_path(wrong).parent.glob("*.part*"))
    with pytest.raises(UserError, match="not pinned .*resolve-externals"):
        externals.fetch_all(SM)


# ---- the offline guard: a fetch the pins missed fails loudly --------------------------------------

@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A git repository any builder could reach (file://), standing in for GitHub."""
    repo = tmp_path_factory.mktemp("upstream") / "up"
    repo.mkdir()
    (repo / "CMakeLists.txt").write_text('message(STATUS "upstream configured")\n')
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "up")
    return repo, _git(repo, "rev-parse", "HEAD")


def _git(cwd, *args):
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_git_cannot_fetch_anything_under_the_guard_even_from_a_reachable_repository(upstream, tmp_path):
    repo, _ = upstream
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path)}
    ok = subprocess.run(["git", "clone", "-q", f"file://{repo}", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert ok.returncode == 0
    blocked = subprocess.run(["git", "clone", "-q", f"file://{repo}", str(tmp_path / "b")],
                             env={**env, **SM.offline_guard()}, capture_output=True, text=True)
    assert blocked.returncode != 0 and "transport 'file' not allowed" in blocked.stderr


@pytest.fixture(scope="module")
def cmake(tmp_path_factory):
    """CMake from the build lock (the one the compile uses), sha256-verified through the wheelhouse."""
    lock = wheelhouse.resolve_lock(REPO_ROOT / SM.lock_paths["build"], SM.toolchain.python, "manylinux_2_36_x86_64")
    wheel = wheelhouse.download(next(f for f in lock if f.project == "cmake"))
    root = tmp_path_factory.mktemp("cmake")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    binary = next(root.rglob("data/bin/cmake"))
    binary.chmod(0o755)
    return binary


def _configure(cmake, tmp_path, upstream, env_extra, *defs):
    repo, commit = upstream
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    # vLLM's two styles: Declare + MakeAvailable with a *_SRC_DIR override, and full-signature Populate
    (project / "CMakeLists.txt").write_text(f"""cmake_minimum_required(VERSION 3.26)
project(guard LANGUAGES NONE)
include(FetchContent)
if(DEFINED ENV{{UP_SRC_DIR}})
  FetchContent_Declare(up SOURCE_DIR $ENV{{UP_SRC_DIR}})
else()
  FetchContent_Declare(up GIT_REPOSITORY file://{repo} GIT_TAG {commit})
endif()
FetchContent_MakeAvailable(up)
if(NOT DEFINED ENV{{UP2_SRC_DIR}})
  FetchContent_Populate(up2 SUBBUILD_DIR ${{CMAKE_BINARY_DIR}}/up2-sub SOURCE_DIR ${{CMAKE_BINARY_DIR}}/_deps/up2-src
    BINARY_DIR ${{CMAKE_BINARY_DIR}}/up2-bin GIT_REPOSITORY file://{repo} GIT_TAG {commit})
endif()
message(STATUS "configured: up at ${{up_SOURCE_DIR}}")
""")
    build = tmp_path / f"build{len(list(tmp_path.glob('build*')))}"
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(tmp_path), **env_extra}
    result = subprocess.run([str(cmake), "-S", str(project), "-B", str(build), *defs], env=env, capture_output=True, text=True)
    return result, build


@pytest.mark.network
def test_cmake_fails_loudly_on_a_fetch_the_pins_missed_and_builds_from_the_handed_over_trees(cmake, upstream, tmp_path):
    repo, _ = upstream
    guard = SM.offline_guard()
    missed, _ = _configure(cmake, tmp_path, upstream, {**guard, "UP_SRC_DIR": str(repo)})  # up2 not handed over
    assert missed.returncode != 0
    assert "transport 'file' not allowed" in missed.stdout + missed.stderr and "Build step for up2 failed" in missed.stderr
    handed, build = _configure(cmake, tmp_path, upstream, {**guard, "UP_SRC_DIR": str(repo), "UP2_SRC_DIR": "1"})
    assert handed.returncode == 0 and f"configured: up at {repo}" in handed.stdout
    assert not list(build.rglob("*-src")), "a handed-over tree leaves no <name>-src: what the compile stage checks"
    fetched, build = _configure(cmake, tmp_path, upstream, {"UP2_SRC_DIR": "1"})
    assert fetched.returncode == 0 and list(build.rglob("up-src")), "without the guard it fetches (and leaves up-src)"


@pytest.mark.network
def test_fully_disconnected_would_have_skipped_the_missing_source_silently(cmake, upstream, tmp_path):
    """Why the compile does not rely on FETCHCONTENT_FULLY_DISCONNECTED (vLLM's cmake_minimum_required 3.26
    leaves CMP0170 OLD): configure succeeds with an empty source directory."""
    result, build = _configure(cmake, tmp_path, upstream, {}, "-DFETCHCONTENT_FULLY_DISCONNECTED=ON")
    assert result.returncode == 0 and "upstream configured" not in result.stdout  # `up` never ran: nothing said so


# ---- resolve-externals, against local repositories standing in for GitHub -------------------------

def _repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    _git(path, "init", "-q")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "c")
    return _git(path, "rev-parse", "HEAD")


@pytest.fixture
def fake_github(tmp_path, http_root):
    www, archive_base = http_root
    gh = tmp_path / "gh"
    sub = _repo(gh / "acme" / "sub", {"include/sub.h": "int x;\n"})
    parent_dir = gh / "acme" / "parent"
    _repo(parent_dir, {"CMakeLists.txt": "# parent\n",
                       ".gitmodules": '[submodule "sub"]\n\tpath = third_party/sub\n\turl = https://github.com/acme/sub.git\n'})
    _git(parent_dir, "update-index", "--add", "--cacheinfo", f"160000,{sub},third_party/sub")
    _git(parent_dir, "commit", "-qm", "add sub")
    _git(parent_dir, "tag", "-a", "v1.0", "-m", "v1.0")
    parent = _git(parent_dir, "rev-parse", "HEAD")
    for repo, commit in (("acme/parent", parent), ("acme/sub", sub)):  # GitHub's archives: git archive, gzipped
        data = subprocess.run(["git", "archive", "--format=tar", f"--prefix={repo.split('/')[1]}-{commit}/", commit],
                              cwd=gh / repo, check=True, capture_output=True).stdout
        (www / repo / "archive").mkdir(parents=True)
        (www / repo / "archive" / f"{commit}.tar.gz").write_bytes(gzip.compress(data))
    return {"base": f"file://{gh}", "archive_base": archive_base, "parent": parent, "sub": sub, "gh": gh}


def _matrix_with_test_pins(tmp_path) -> Path:
    text = matrix.MATRIX_PATH.read_text().split('[[externals."vllm-0.33.0".pins]]', 1)[0]
    text += '''[[externals."vllm-0.33.0".pins]]
name = "parent"
repo = "acme/parent"
ref = "v1.0"
ref_in = "CMakeLists.txt"
env = "PARENT_SRC_DIR"
unresolved = "commit, tar_sha256: not reachable"

# a comment that belongs to the next pin
[[externals."vllm-0.33.0".pins]]
name = "parent/third_party/sub"
parent = "parent"
path = "third_party/sub"
unresolved = "repo, commit, tar_sha256: not reachable"
'''
    path = tmp_path / "m" / "matrix.toml"
    path.parent.mkdir()
    path.write_text(text)
    (path.parent / "patches").symlink_to(REPO_ROOT / "patches")
    return path


def test_resolve_fills_commits_trees_and_tar_hashes_from_github(fake_github, tmp_path):
    path = _matrix_with_test_pins(tmp_path)
    lines = []
    assert resolve_externals.main(matrix.load(path), lines.append, fake_github["base"], fake_github["archive_base"]) == 0
    t = matrix.load(path).resolve("sm120")
    parent, sub = t.external("parent"), t.external("parent/third_party/sub")
    assert (parent.commit, sub.repo, sub.commit) == (fake_github["parent"], "acme/sub", fake_github["sub"])
    assert parent.tree == _git(fake_github["gh"] / "acme" / "parent", "rev-parse", "HEAD^{tree}")
    assert not parent.missing and not sub.missing and parent.unresolved is None and sub.unresolved is None
    tar = subprocess.run(["git", "archive", "--format=tar", f"--prefix=sub-{sub.commit}/", sub.commit],
                         cwd=fake_github["gh"] / "acme" / "sub", capture_output=True, check=True).stdout
    assert sub.tar_sha256 == hashlib.sha256(tar).hexdigest()
    assert "resolved by build.py resolve-externals" in parent.evidence[-1]
    assert "# a comment that belongs to the next pin" in path.read_text()
    assert lines[-1] == "resolve-externals: 2 pins filled in matrix.toml; run `python build.py render`"
    again = []
    resolve_externals.main(matrix.load(path), again.append, fake_github["base"], fake_github["archive_base"])
    assert again[-1].endswith("every pin agrees with GitHub")


def test_a_moved_tag_is_an_error_never_an_update(fake_github, tmp_path):
    path = _matrix_with_test_pins(tmp_path)
    resolve_externals.main(matrix.load(path), lambda _: None, fake_github["base"], fake_github["archive_base"])
    repo = fake_github["gh"] / "acme" / "parent"
    (repo / "moved.txt").write_text("x")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "moved")
    _git(repo, "tag", "-f", "-a", "v1.0", "-m", "moved")
    with pytest.raises(UserError, match=r"external parent: matrix.toml pins commit .* GitHub says .* \(the tag moved\?\)"):
        resolve_externals.main(matrix.load(path), lambda _: None, fake_github["base"], fake_github["archive_base"])


def test_without_github_it_says_so_in_one_line(tmp_path):
    with pytest.raises(UserError) as exc:
        resolve_externals.main(M, lambda _: None, base=f"file://{tmp_path}/nowhere")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("cannot reach file://")
    assert "resolve-externals` where github.com is reachable" in str(exc.value)


def test_build_py_serves_verified_archives_to_the_build_under_githubs_layout(tmp_path):
    import socket
    import urllib.request
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"tgz")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pin = SM.external("qutlass")
    with wheelhouse.LoopbackIndex([], {f"{externals.MIRROR_PREFIX}/{pin.archive}": archive}, port=port) as index:
        url = f"{index.url}/files/{externals.MIRROR_PREFIX}/{pin.archive}"  # = ${VLLM_EXTERNALS_URL}/<repo>/archive/...
        assert urllib.request.urlopen(url, timeout=10).read() == b"tgz"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{index.url}/files/{externals.MIRROR_PREFIX}/other/archive/x.tar.gz", timeout=10)
