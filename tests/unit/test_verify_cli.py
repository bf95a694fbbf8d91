"""The real `build.py verify` command line, in a subprocess, against the fake vLLM server: exit
codes, one line on stderr, no traceback, and the JSON report written whatever went wrong."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT, inputs
from tests.support.fake_vllm import FakeVLLM

QUICK = ["--workload", "instructions", "--concurrency", "1,2", "--max-tokens", "16"]


def verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "verify", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=300)


@pytest.mark.parametrize("mode, code, first_words, extra", [
    ("healthy", 0, None, []),
    ("models-empty", 3, "verify: CANNOT JUDGE: server", []),
    ("stream-cut", 1, "verify: FAIL: error-rate, request-closed", []),
    ("trickle", 1, "verify: FAIL: ", ["--first-byte-timeout", "2", "--request-timeout", "3", "--run-timeout", "8"]),
    ("counters-decrease", 1, "verify: FAIL: counters-decreased", []),
    ("nan-metrics", 3, "verify: CANNOT JUDGE: acceptance-instructions, metrics-not-finite", []),   # undesigned
    ("close-after-headers", 1, "verify: FAIL: error-rate, request-closed", []),                    # undesigned
    ("bad-draft", 1, "verify: FAIL: acceptance-instructions, draft-canary", []),
])
def test_cli_exit_code_and_one_stderr_line(mode, code, first_words, extra, tmp_path):
    report = tmp_path / "v.json"
    with FakeVLLM(mode) as server:
        result = verify("--url", server.url, *QUICK, *extra, "--json", str(report))
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == code, result.stdout[-2000:] + result.stderr
    data = json.loads(report.read_text())
    if code == 0:
        assert result.stderr == "" and "\nPASS\n" in result.stdout and data["verdict"]["passed"]
    else:
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(first_words), result.stderr
        assert not data["verdict"]["passed"]
        named = result.stderr.split(": ", 2)[2].strip().split(", ")
        listed = {c["name"]: c["status"] for c in data["checks"]}
        assert all(listed[n] == data["status"] for n in named)


def test_trickle_is_stopped_by_the_request_timeout(tmp_path):
    with FakeVLLM("trickle") as server:
        result = verify("--url", server.url, *QUICK, "--first-byte-timeout", "2", "--request-timeout", "3",
                        "--run-timeout", "8", "--json", str(tmp_path / "v.json"))
    checks = {c["name"]: c for c in json.loads((tmp_path / "v.json").read_text())["checks"]}
    assert checks["request-timeout-request"]["status"] == "FAIL"
    assert "not finished within 3s" in checks["request-timeout-request"]["detail"]
    assert result.returncode == 1


def test_nothing_listening_is_one_error_line():
    result = verify("--url", "http://127.0.0.1:9", "--connect-timeout", "2")
    assert result.returncode == 1
    assert result.stderr.startswith("error: no OpenAI-compatible server answers at http://127.0.0.1:9")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8000", "http://127.0.0.1:99999", "127.0.0.1:8000"])
def test_a_url_that_is_no_http_url_is_one_error_line(url):
    result = verify("--url", url)
    assert result.returncode == 2 and result.stderr.startswith("error: verify: argument --url: ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_an_unwritable_report_path_is_one_error_line_before_anything_is_sent(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with FakeVLLM("healthy") as server:
        result = verify("--url", server.url, *QUICK, "--json", str(blocker / "v.json"))
        assert server.state.requests == 0
    assert result.returncode == 2 and result.stderr.startswith("error: verify: argument --json: ")
    assert f"is under {inputs.shown(str(blocker))}, which is a file" in result.stderr
    assert len(result.stderr.splitlines()) == 1
