"""verify against a fake vLLM server in every mode (tests/support/fake_vllm.py): the healthy
server passes, each misbehaviour is a named FAIL or a named CANNOT JUDGE with a non-zero exit,
one line per cause, and nothing ends in a traceback.

The UNDESIGNED modes were written after verify's code. Before the fixes they prompted (commit
f19df0b), verify: PASSed "OK." to everything under a non-tiny model name (the tiny model's rule
caught it under "tiny-mtp"), PASSed NaN logprobs, ended NaN counters in a verify-internal
line, could not read gzip'd bodies (CANNOT JUDGE: server), named an HTML page "a stream without
[DONE]", and handled double [DONE], counters reset to zero and a close after headers as named
failures already.
"""

from __future__ import annotations

import json

import pytest

from dsv4_images import cli
from dsv4_images.verify import command, prompts
from dsv4_images.verify.checks import CANNOT, FAIL, PASS, SKIPPED
from tests.support.fake_vllm import MODES, UNDESIGNED, FakeVLLM

QUICK = ["--workload", "reasoning", "--concurrency", "1,2", "--max-tokens", "16"]
# Prompts of that workload in the default prompt set (per concurrency level).
REASONING = sum(1 for p in prompts.load()[1] if p.workload == "reasoning")
# Hanging modes: small bounds so the test takes seconds (first byte 2 s, request 3 s, run 8 s).
SHORT = ["--first-byte-timeout", "2", "--request-timeout", "3", "--run-timeout", "8"]
HANGS = {"models-hang", "metrics-hang", "slow-headers", "stall", "trickle"}

# mode -> (exit code, {check name: status}) ; checks not named may be anything but must not hide the verdict
EXPECTED = {
    "healthy": (0, {"server": PASS, "context": PASS, "draft-canary": PASS, "acceptance-collapse": PASS,
                    "stream-vs-nonstream": PASS, "concurrency-identical": PASS, "logprobs": PASS,
                    "baseline-identical": SKIPPED}),
    "baseline": (1, {"spec-decode-present": FAIL, "acceptance-reasoning": FAIL, "draft-canary": FAIL}),
    "models-not-json": (3, {"server": CANNOT}),
    "models-not-list": (3, {"server": CANNOT}),
    "models-empty": (3, {"server": CANNOT}),
    "models-http-500": (3, {"server": CANNOT}),
    "models-no-limit": (0, {"server": PASS, "context": PASS}),
    "models-hang": (3, {"server": CANNOT}),
    "no-tokenize": (0, {"context": PASS}),
    "metrics-http-500": (3, {"metrics-unreadable": CANNOT, "acceptance-reasoning": CANNOT, "draft-canary": CANNOT,
                             "acceptance-collapse": CANNOT}),
    "metrics-not-utf8": (3, {"metrics-not-utf8": CANNOT, "acceptance-reasoning": CANNOT}),
    "metrics-not-prometheus": (3, {"metrics-not-prometheus": CANNOT, "acceptance-reasoning": CANNOT}),
    "metrics-absent": (1, {"spec-decode-present": FAIL, "acceptance-reasoning": FAIL}),
    "metrics-zero": (1, {"acceptance-reasoning": FAIL, "draft-canary": FAIL}),
    "counters-decrease": (1, {"counters-decreased": FAIL}),
    "metrics-hang": (3, {"metrics-unreadable": CANNOT, "acceptance-reasoning": CANNOT}),
    "completions-http-500": (1, {"error-rate": FAIL, "request-http-status": FAIL, "acceptance-reasoning": CANNOT}),
    "stream-cut": (1, {"request-closed": FAIL}),
    "stream-no-done": (1, {"request-stream-no-done": FAIL}),
    "sse-not-object": (1, {"request-event-not-object": FAIL}),
    "sse-not-json": (1, {"request-event-not-json": FAIL}),
    "sse-null-delta": (1, {"request-event-malformed": FAIL}),
    "sse-null-choices": (1, {"request-event-malformed": FAIL}),
    "slow-headers": (1, {"request-timeout-first-byte": FAIL}),
    "stall": (1, {"request-timeout-stall": FAIL}),
    "trickle": (1, {"request-timeout-request": FAIL}),
    "bad-draft": (1, {"draft-canary": FAIL, "acceptance-reasoning": FAIL}),
    "collapse": (1, {"acceptance-collapse": FAIL, "draft-canary": PASS}),
    "stream-drops-words": (1, {"stream-vs-nonstream": FAIL}),
    "batch-corrupts": (1, {"concurrency-identical": FAIL, "corrupted-outputs": FAIL}),
    "unlikely-logprobs": (1, {"logprobs": FAIL, "corrupted-outputs": PASS}),
    # undesigned
    "ok-everything": (1, {"corrupted-outputs": FAIL}),
    "html-200": (1, {"request-not-event-stream": FAIL, "request-not-json": FAIL}),
    "gzip": (0, {"server": PASS, "metrics-readable": PASS}),
    "double-done": (0, {"error-rate": PASS}),
    "nan-metrics": (3, {"metrics-not-finite": CANNOT}),
    "counters-zero": (1, {"counters-decreased": FAIL}),
    "close-after-headers": (1, {"request-closed": FAIL}),
    "logprobs-nan": (3, {"logprobs": CANNOT}),
}
BASELINE_ONLY = {"diverge"}
TOOLS_ONLY = {m for m in MODES if m.startswith("tools-")}   # misbehave on tools requests only: test_verify_tools.py


def verify(url: str, *extra: str, capsys) -> tuple[int, list[str], str]:
    """command.main in-process; returns (exit code, stdout lines, stderr)."""
    lines: list[str] = []
    args = cli.parser().parse_args(["verify", "--url", url, *extra])
    code = command.main(args, emit=lines.append)
    return code, "\n".join(lines).splitlines(), capsys.readouterr().err


def run_mode(mode: str, tmp_path, capsys, *extra: str, model: str = "tiny-mtp", baseline: str | None = None):
    report = tmp_path / f"{mode}.json"
    with FakeVLLM(mode, model=model) as server:
        if baseline:
            with FakeVLLM(baseline) as base:
                code, out, err = verify(server.url, "--baseline-url", base.url, *QUICK, *extra,
                                        "--json", str(report), capsys=capsys)
        else:
            code, out, err = verify(server.url, *QUICK, *(SHORT if mode in HANGS else ()), *extra,
                                    "--json", str(report), capsys=capsys)
    return code, json.loads(report.read_text()), out, err


def assert_named(code, data, out, err, expected_code, expected):
    checks = {c["name"]: c for c in data["checks"]}
    for name, status in expected.items():
        assert name in checks, f"{name} missing: {sorted(checks)}"
        assert checks[name]["status"] == status, checks[name]
        assert any(line.strip().startswith(status) and name in line for line in out), f"{name} not in the table"
    assert code == expected_code, [c for c in data["checks"] if c["status"] not in (PASS, SKIPPED)]
    assert "Traceback" not in err and "Traceback" not in "\n".join(out)
    names = [c["name"] for c in data["checks"]]
    assert len(names) == len(set(names)), "one line per cause"
    if expected_code == 0:
        assert err == "" and data["verdict"] == {"passed": True, "failures": []} and out[-2:][0] == "PASS"
        assert not [c for c in data["checks"] if c["status"] in (FAIL, CANNOT)]
    else:
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"verify: {data['status']}: ")
        assert data["verdict"]["passed"] is False and data["verdict"]["failures"]
        assert data["status"] == {1: FAIL, 3: CANNOT}[expected_code]
        assert "verify-internal" not in names


def test_every_mode_has_an_expectation():
    assert set(MODES) == set(EXPECTED) | BASELINE_ONLY | TOOLS_ONLY
    assert set(UNDESIGNED) <= set(EXPECTED)


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_mode_is_judged_by_name(mode, tmp_path, capsys):
    expected_code, expected = EXPECTED[mode]
    assert_named(*run_mode(mode, tmp_path, capsys), expected_code, expected)


def test_constant_answers_fail_even_where_no_rule_applies(tmp_path, capsys):
    """'OK.' to everything, served under another model name with the sm100 thresholds (no tiny-model rule)."""
    code, data, out, err = run_mode("ok-everything", tmp_path, capsys, "--arch", "sm100", model="deepseek-v4-flash")
    assert_named(code, data, out, err, 1, {"constant-answer": FAIL, "answers": FAIL})


def test_answers_that_never_finish_cannot_be_judged(tmp_path, capsys):
    code, data, out, err = run_mode("healthy", tmp_path, capsys, "--arch", "sm100", model="deepseek-v4-flash")
    assert_named(code, data, out, err, 3, {"answers": CANNOT})


@pytest.mark.parametrize("baseline, code, status", [("baseline", 0, PASS), ("diverge", 1, FAIL), ("healthy", 3, CANNOT)])
def test_greedy_outputs_against_the_mtp_off_baseline(baseline, code, status, tmp_path, capsys):
    got = run_mode("healthy", tmp_path, capsys, baseline=baseline)
    assert_named(*got, code, {"baseline-identical": status})
    figures = next(c for c in got[1]["checks"] if c["name"] == "baseline-identical")["figures"]
    if baseline == "diverge":
        assert figures["identical_share"] == 0.0
        assert {p["first_divergence"] for p in figures["prompts"].values()} == {6}
    if baseline == "healthy":
        assert figures["baseline_drafts"] > 0


def test_an_unusable_baseline_is_named_and_the_rest_still_judged(tmp_path, capsys):
    code, data, out, err = run_mode("healthy", tmp_path, capsys, baseline="models-empty")
    assert_named(code, data, out, err, 3, {"baseline-server": CANNOT, "acceptance-reasoning": PASS})
    assert "baseline-identical" not in {c["name"] for c in data["checks"]}


# ---- the context limit: never blame the model for a limit the server set ---------------------------

def test_default_max_tokens_on_the_cpu_image_is_clamped_and_context_limited(tmp_path, capsys):
    """The cpu image serves max_model_len 1024; verify's default --max-tokens is 1024 (issue 11:
    90/90 outputs were called 'truncated without reason')."""
    code, data, out, err = run_mode("healthy", tmp_path, capsys, "--max-tokens", "1024")
    assert_named(code, data, out, err, 0, {"context": PASS, "corrupted-outputs": PASS})
    assert any(line.startswith("warning: --max-tokens 1024 leaves no room") for line in out)
    context = next(c for c in data["checks"] if c["name"] == "context")
    assert context["figures"]["clamped_requests"] == REASONING and context["figures"]["tokenize"] == "offered"
    for phase in data["phases"]:
        assert phase["classes"]["context-limited"] == phase["requests"] == REASONING
        assert all(p["prompt_tokens"] + p["completion_tokens"] == 1024 for p in phase["prompts"].values())


def test_without_tokenize_the_context_limit_is_judged_after_the_fact(tmp_path, capsys):
    code, data, out, err = run_mode("no-tokenize", tmp_path, capsys, "--max-tokens", "1024")
    assert_named(code, data, out, err, 0, {"context": PASS})
    context = next(c for c in data["checks"] if c["name"] == "context")
    assert context["figures"]["clamped_requests"] == 0 and context["figures"]["context_limited_outputs"] == 2 * REASONING
    assert context["figures"]["tokenize"].startswith("POST /tokenize: http-status: HTTP 404")


def test_without_max_model_len_a_short_length_stop_cannot_be_judged(tmp_path, capsys):
    code, data, out, err = run_mode("models-no-limit", tmp_path, capsys, "--max-tokens", "1024")
    assert_named(code, data, out, err, 3, {"context": CANNOT, "corrupted-outputs": PASS})
    assert "states no max_model_len" in next(c for c in data["checks"] if c["name"] == "context")["detail"]


# ---- arguments -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, message", [
    ("--run-timeout", "0", "argument --run-timeout: expected a positive number of seconds"),
    ("--connect-timeout", "nan", "argument --connect-timeout: expected a number in 0-604800, got 'nan'"),
    ("--first-byte-timeout", "-1", "argument --first-byte-timeout: expected a number in 0-604800, got '-1'"),
    ("--temperature", "nan", "argument --temperature: expected a number in 0-2, got 'nan'"),
])
def test_bad_bounds_are_one_line(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parser().parse_args(["verify", "--url", "http://127.0.0.1:9", flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and len(err.splitlines()) == 1


# ---- a drafter that goes bad in the middle of a run -----------------------------------------------

def test_collapse_across_a_run_when_the_drafter_goes_bad_midway(tmp_path, capsys):
    """A proxy in front of a healthy server, then (from the 5th scrape, which opens the second canary
    window) of one whose MTP head is broken: the same check the cpu integration test makes with
    real vLLM containers (tests/integration/test_verify_signals_cpu.py)."""
    from tests.support.switching_proxy import SwitchingProxy
    with FakeVLLM("healthy") as good, FakeVLLM("bad-draft") as bad, SwitchingProxy(good.url, bad.url, 4) as proxy:
        code, out, err = verify(proxy.url, *QUICK, "--json", str(tmp_path / "v.json"), capsys=capsys)
        assert proxy.switched
    data = json.loads((tmp_path / "v.json").read_text())
    checks = {c["name"]: c for c in data["checks"]}
    assert code == 1 and checks["acceptance-collapse"]["status"] == FAIL, checks["acceptance-collapse"]
    assert checks["draft-canary"]["status"] == PASS        # the first window was healthy
    windows = checks["acceptance-collapse"]["figures"]["windows"]
    assert windows[0] > 0.8 and windows[-1] < 0.2


def test_behind_a_router_the_counters_are_read_from_every_replica_and_summed(tmp_path, capsys):
    """A router's own /metrics is one replica's at a time; --metrics-url names each replica instead."""
    report = tmp_path / "router.json"
    with FakeVLLM("healthy") as front, FakeVLLM("healthy") as other:
        code, out, err = verify(front.url, *QUICK, "--metrics-url", front.url, "--metrics-url", other.url,
                                "--json", str(report), capsys=capsys)
    assert code == 0, (out, err)
    with FakeVLLM("healthy") as front, FakeVLLM("metrics-hang") as broken:
        code, out, err = verify(front.url, *QUICK, *SHORT, "--metrics-url", front.url, "--metrics-url", broken.url,
                                capsys=capsys)
    assert code == 3 and "metrics-unreadable" in err
    assert any(broken.url in line for line in out), "the unreadable replica is named"


def test_counters_of_two_replicas_add_up():
    from dsv4_images.verify.metrics import SpecDecodeCounters
    a = SpecDecodeCounters(10, 20, 15, {0: 9, 1: 6}, True)
    b = SpecDecodeCounters(4, 8, 2, {0: 2}, True)
    total = a + b
    assert (total.drafts, total.draft_tokens, total.accepted, total.accepted_per_position) == (14, 28, 17, {0: 11, 1: 6})
    assert total.acceptance_rate == 17 / 28 and not (a + SpecDecodeCounters()).present
