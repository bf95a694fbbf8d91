"""Bad input that is not a single value: files we read (matrix.toml, serve.json, the runtime file),
report paths on read-only and refusing file systems, a closed or full stdout for every subcommand
that prints, flags a combination would ignore, a port already taken. Each is one `error:` line and
a non-zero exit, or (a closed stdout) the command's own exit code with nothing on stderr."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT, cli, inputs, matrix
from dsv4_images.in_image import entrypoint as ep
from dsv4_images.in_image import runtime
from tests.conftest import need
from tests.support.fake_vllm import FakeVLLM
from tests.unit.test_bad_input import NOWHERE, run_cli, tripwires  # noqa: F401 (tripwires: a fixture)


def one_error_line(code, err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert code not in (0, None) and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in err and all(n in lines[0] for n in names), lines[0]
    return lines[0]


# ---- matrix.toml -----------------------------------------------------------------------------------

MATRICES = {
    "missing": None, "directory": "dir", "binary": b"\xff\xfe\x00junk\x80", "not TOML": b"[project\nname=",
    "empty": b"", "no schema": b"[project]\nname = 'x'\n", "schema 2": b"schema = 2\n",
    "a target with a string port": None,  # made from the real one below
}


@pytest.mark.parametrize("case", list(MATRICES))
@pytest.mark.parametrize("argv", [["matrix"], ["build", "--arch", "cpu", "--dry-run"], ["verify", "--url", "http://127.0.0.1:9"]])
def test_a_broken_matrix_is_one_line_before_anything_is_sent(case, argv, tripwires, monkeypatch):
    path = tripwires / "m" / "matrix.toml"
    path.parent.mkdir(exist_ok=True)
    content = MATRICES[case]
    if content == "dir":
        path.mkdir()
    elif case == "a target with a string port":
        path.write_text((REPO_ROOT / "matrix.toml").read_text().replace("port = 8000", 'port = "8000"', 1))
    elif content is not None:
        path.write_bytes(content)
    monkeypatch.setattr(matrix, "MATRIX_PATH", path)
    code, _, err = run_cli(argv)
    one_error_line(code, err, "matrix.toml")


def test_version_says_when_the_matrix_cannot_be_read(tripwires, monkeypatch):
    (tripwires / "matrix.toml").write_bytes(b"\xff")
    monkeypatch.setattr(matrix, "MATRIX_PATH", tripwires / "matrix.toml")
    code, out, err = run_cli(["--version"])
    assert code == 0 and "matrix unreadable: " in out and "not UTF-8" in out and err == ""


# ---- serve.json and the runtime file (the image's own files) ---------------------------------------

SERVE_JSON = {"not JSON": "{", "a list": "[]", "empty object": "{}", "serve is a list": '{"serve": []}',
              "model is a number": '{"serve": {"model": 1}}', "port is text": None, "extra_args not strings": None,
              "binary": b"\xff\xfe", "directory": "dir", "missing": "missing"}


@pytest.mark.parametrize("case", list(SERVE_JSON))
def test_a_broken_serve_json_is_one_line_and_exit_2(case, tmp_path, capsys):
    path = tmp_path / "serve.json"
    good = matrix.load().resolve("cpu").serve_defaults()
    content = SERVE_JSON[case]
    if case == "port is text":
        content = json.dumps({**good, "serve": {**good["serve"], "port": "8000"}})
    elif case == "extra_args not strings":
        content = json.dumps({**good, "serve": {**good["serve"], "extra_args": ["--seed", 1]}})
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content != "missing":
        path.write_text(content)
    assert ep.main(["--print-command"], {}, path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("[dsv4-flash] error: ") and str(path) in err[0], err
    assert ep.main(["--healthcheck"], {"DSV4_RUNTIME_FILE": str(tmp_path / "none.json")}, path) == 1  # unhealthy


@pytest.mark.parametrize("content", ["[]", '{"port": "8000", "model": "m"}', '{"port": 0, "model": "m"}',
                                     '{"port": 8000}', '{"port": true, "model": "m"}', "\xff", ""])
def test_a_runtime_file_that_is_not_what_record_writes_is_ignored(content, tmp_path):
    path = tmp_path / "serving.json"
    path.write_text(content, errors="surrogateescape")
    assert runtime.recorded(path) is None


def test_probes_and_the_command_refuse_arguments_they_would_ignore(tmp_path, capsys):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(matrix.load().resolve("cpu").serve_defaults()))
    assert ep.main(["--healthcheck", "--port", "9"], {}, path) == 2
    assert ep.main(["--print-command", "bash"], {}, path) == 2
    err = capsys.readouterr().err
    assert "--healthcheck takes no arguments" in err and "'bash' is not a `vllm serve` option" in err


# ---- report paths ---------------------------------------------------------------------------------

def test_a_report_on_a_read_only_mount_is_refused_before_anything_is_sent(tmp_path):
    """A real read-only bind mount (a private mount namespace, gone when the command ends)."""
    need(shutil.which("unshare") is not None, "no unshare")
    ro = tmp_path / "ro"
    ro.mkdir()
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && touch {ro}/x"],
                           capture_output=True, text=True)
    need("Read-only file system" in probe.stderr, f"cannot make a read-only mount here: {probe.stderr.strip()[:120]}")
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && exec '{sys.executable}' "
              f"'{REPO_ROOT / 'build.py'}' verify --url http://127.0.0.1:9 --json {ro}/report.json")
    result = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                            text=True, env={**os.environ, **NOWHERE}, timeout=120)
    one_error_line(result.returncode, result.stderr, "argument --json", "Read-only file system")


def test_a_report_in_a_directory_the_user_cannot_write_is_refused(tmp_path):
    """As an unprivileged user (root writes anywhere), into a mode 555 directory."""
    need(shutil.which("setpriv") is not None and os.geteuid() == 0, "needs root and setpriv to drop to a user")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    tmp_path.chmod(0o755)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                             str(REPO_ROOT / "build.py"), "verify", "--url", "http://127.0.0.1:9",
                             "--json", str(locked / "r.json")], capture_output=True, text=True,
                            env={**os.environ, **NOWHERE, "HOME": str(tmp_path)}, timeout=120, cwd=tmp_path)
    one_error_line(result.returncode, result.stderr, "argument --json", "Permission denied")


# ---- stdout ---------------------------------------------------------------------------------------

def closed_pipe_run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """build.py with stdout a pipe whose reader is already gone: the first write gets EPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), *args], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300, env={**os.environ, **NOWHERE}, **kwargs)
    finally:
        os.close(write)


OFFLINE_PRINTERS = [["--help"], ["--version"], ["build", "--arch", "cpu", "--dry-run"],
                    ["build", "--arch", "sm120", "--dry-run", "--json"], ["matrix"], ["matrix", "--json"],
                    ["render", "--check"], ["lock", "--check"], *([name, "--help"] for name in cli.SUBCOMMANDS)]


@pytest.mark.parametrize("argv", OFFLINE_PRINTERS, ids=" ".join)
def test_a_closed_stdout_pipe_is_quiet_and_keeps_the_exit_code(argv):
    result = closed_pipe_run(*argv)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_verify_into_a_closed_pipe_still_judges_and_writes_its_report(tmp_path):
    with FakeVLLM("healthy") as server:
        ok = closed_pipe_run("verify", "--url", server.url, "--workload", "instructions", "--concurrency", "1",
                             "--max-tokens", "16", "--json", str(tmp_path / "ok.json"))
    with FakeVLLM("bad-draft") as server:
        bad = closed_pipe_run("verify", "--url", server.url, "--workload", "instructions", "--concurrency", "1",
                              "--max-tokens", "16", "--json", str(tmp_path / "bad.json"))
    assert ok.returncode == 0 and ok.stderr == "" and json.loads((tmp_path / "ok.json").read_text())["verdict"]["passed"]
    assert bad.returncode == 1 and bad.stderr.startswith("verify: FAIL: ") and len(bad.stderr.splitlines()) == 1


def test_stdout_closed_from_the_start_and_a_full_stdout():
    closed = subprocess.run(f"'{sys.executable}' '{REPO_ROOT / 'build.py'}' matrix --json >&-", shell=True,
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 0 and closed.stderr == "", closed.stderr
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "matrix", "--json"], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    one_error_line(result.returncode, result.stderr, "cannot write to standard output: No space left on device")


class ClosedStdout(io.TextIOBase):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def stub_printing(monkeypatch, emitted: list):
    """The subcommands that need the daemon, uv or the network, with what they would print (3 lines, then done)."""
    from dsv4_images import base, builder, demo, digests, docker_client, locks, patches, render, repro

    def work(emit, code=0):
        for i in range(3):
            emit(f"line {i}")
        emitted.append("finished")
        return code
    monkeypatch.setattr(docker_client, "connect", lambda: None)
    monkeypatch.setattr(builder, "execute", lambda client, m, plan, emit: work(emit))
    monkeypatch.setattr(base, "ensure_base", lambda client, target, emit, **kw: work(emit) or "base")
    monkeypatch.setattr(locks, "write_locks", lambda m, targets, progress: work(progress) or [])
    monkeypatch.setattr(locks, "write_dev_lock", lambda progress: work(progress))
    monkeypatch.setattr(render, "write", lambda m: (work(lambda _line: None), ["Dockerfile.cpu"] * 3)[1])
    monkeypatch.setattr(patches, "check_targets", lambda targets, progress: (work(progress), ["ok"])[1])
    monkeypatch.setattr(repro, "main", lambda m, target, emit, **kw: work(emit, code=1))
    monkeypatch.setattr(digests, "main", lambda m, emit: work(emit, code=1))
    monkeypatch.setattr(demo, "main", lambda args, emit, m: work(emit))


@pytest.mark.parametrize("argv, code", [
    (["build", "--arch", "cpu"], 0), (["base"], 0), (["lock"], 0), (["lock", "--dev"], 0), (["render"], 0),
    (["patches"], 0), (["repro"], 1), (["resolve-digests"], 1), (["demo"], 0)])
def test_every_printing_subcommand_finishes_when_stdout_is_gone(argv, code, monkeypatch, tripwires):
    emitted: list = []
    stub_printing(monkeypatch, emitted)
    with contextlib.redirect_stdout(ClosedStdout()):
        result = cli.main(argv)
    assert result == code and emitted == ["finished"]


# ---- flags a combination would ignore, and a port already taken ------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["build", "--arch", "cpu", "--json"], "--json prints the plan and needs --dry-run"),
    (["matrix", "--compact"], "--compact shapes the JSON and needs --json"),
    (["lock", "--dev", "--arch", "cpu"], "--dev locks requirements/dev.txt only"),
    (["lock", "--dev", "--check"], "--dev locks requirements/dev.txt only"),
    (["lock", "--check", "--arch", "cpu"], "--check checks every target's locks"),
    (["verify", "--url", "http://127.0.0.1:9", "--request-timeout", "100", "--run-timeout", "10"],
     "--request-timeout 100 is longer than the run timeout (10s)"),
    (["verify", "--url", "http://127.0.0.1:9", "--first-byte-timeout", "1000"],
     "--first-byte-timeout 1000 is longer than the request timeout (900s, the default)"),
])
def test_a_flag_the_combination_would_ignore_is_refused(argv, words, tripwires):
    code, _, err = run_cli(argv)
    assert code == 2
    one_error_line(code, err, words)


def test_matrix_kind_filters_the_listing_too(tripwires):
    code, out, _ = run_cli(["matrix", "--kind", "cpu"])
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["cpu"]


def test_a_run_timeout_alone_lowers_the_defaults_inside_it():
    from dsv4_images.verify import command
    args = cli.parser().parse_args(["verify", "--url", "http://h", "--run-timeout", "60"])
    t = command._timeouts(args)
    assert (t.connect, t.first_byte, t.request, t.run) == (10, 60, 60, 60)


def test_demo_on_a_taken_port_is_one_line_before_the_build(tripwires):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(["demo", "--port", str(port)])
    one_error_line(code, err, f"demo: --port {port}: cannot listen on 127.0.0.1:{port}", "docker rm -f")


_CHECK_THE_CACHE = """
import sys, time
from dsv4_images import cli
from dsv4_images.errors import UserError
end, refused = time.time() + 2, 0
while time.time() < end:
    try:
        cli.check_environment("build", env={"DSV4_CACHE": sys.argv[1]})
    except UserError:
        refused += 1
sys.exit(min(refused, 1))
"""


def test_two_builds_checking_one_cache_at_once_both_find_it_writable(tmp_path):
    """./dev test runs the cpu and sm120 builds side by side with one $DSV4_CACHE; its check wrote a probe of
    one fixed name, so one build could refuse the cache on the other's probe. Two processes check it for the
    same 2 s: neither may refuse it, and nothing is left in it."""
    cache = tmp_path / "cache"
    cache.mkdir()
    checks = [subprocess.Popen([sys.executable, "-c", _CHECK_THE_CACHE, str(cache)], cwd=REPO_ROOT) for _ in range(2)]
    assert [p.wait(timeout=120) for p in checks] == [0, 0]
    assert not list(cache.iterdir())


@pytest.mark.parametrize("layout,words", [
    ("file", "is a file, not a directory"),
    ("under-file", "which is a file, not a directory"),
    ("under-file-named-with-a-newline", "which is a file, not a directory"),
    ("long", "is longer than a directory path"),
    ("dangling-link", "is a symbolic link that leads nowhere"),
    ("link-loop", "is a symbolic link that leads nowhere"),
])
def test_a_cache_that_cannot_be_a_writable_directory_is_one_line(layout, words, tmp_path):
    """Each of these was accepted or gave two lines before; a link to nowhere passed the check and made
    the download's mkdir fail later with a traceback."""
    (tmp_path / "f").write_text("")
    (tmp_path / "a\nb").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    text = {"file": tmp_path / "f", "under-file": tmp_path / "f" / "cache",
            "under-file-named-with-a-newline": tmp_path / "a\nb" / "cache", "long": tmp_path / ("x" * 256),
            "dangling-link": tmp_path / "dangling", "link-loop": tmp_path / "loop" / "cache"}[layout]
    with pytest.raises(ValueError) as exc:
        inputs.writable_dir(str(text))
    assert words in str(exc.value) and "\n" not in str(exc.value)
    assert inputs.writable_dir(str(tmp_path / "new" / "cache")) == tmp_path / "new" / "cache"  # made later: fine
    assert not (tmp_path / "new").exists()  # the check makes nothing
