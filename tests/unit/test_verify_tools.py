"""verify --workload tools against the fake vLLM server: the healthy server passes, each tool-calling
misbehaviour (tests/support/fake_vllm.py, the tools-* modes) is a named FAIL with exit 1 and one
line on stderr; the tiny model's inability to choose a tool is SKIPPED by name, never a PASS."""

from __future__ import annotations

import json

import pytest

from dsv4_images.verify import client, tools
from dsv4_images.verify.checks import FAIL, PASS, SKIPPED
from tests.support.fake_vllm import MODES, FakeVLLM
from tests.unit.test_verify_modes import assert_named, verify

TOOL_CHECKS = ("tool-calls-structured", "tool-arguments-json", "tool-arguments-schema", "tool-markup",
               "tool-stream-vs-nonstream", "tool-choice-auto")
LIVE = ["--arch", "sm100"]          # a model that is not the tiny one: every check applies

# mode -> (served model is the tiny one?, {check: status})
EXPECTED = {
    "tools-unsupported": {"request-http-status": FAIL},
    "tools-markup": {"tool-markup": FAIL, "tool-calls-structured": PASS, "tool-arguments-schema": PASS},
    "tools-args-not-json": {"tool-arguments-json": FAIL},
    "tools-args-schema": {"tool-arguments-schema": FAIL, "tool-arguments-json": PASS},
    "tools-stream-differs": {"tool-stream-vs-nonstream": FAIL, "tool-arguments-schema": PASS},
    "tools-required-text": {"tool-calls-structured": FAIL},
    "tools-stream-drops-call": {"tool-stream-vs-nonstream": FAIL},
    "tools-auto-text": {"tool-choice-auto": FAIL, "tool-calls-structured": PASS},
}


def run_tools(mode: str, tmp_path, capsys, model: str = "deepseek-v4-flash"):
    report = tmp_path / f"{mode}.json"
    extra = LIVE if model != "tiny-mtp" else []
    with FakeVLLM(mode, model=model) as server:
        code, out, err = verify(server.url, "--workload", "tools", *extra, "--json", str(report), capsys=capsys)
    return code, json.loads(report.read_text()), out, err


def test_every_tools_mode_has_an_expectation():
    assert {m for m in MODES if m.startswith("tools-")} == set(EXPECTED) | {"tools-like-tiny"}


def test_what_the_cpu_images_tiny_model_cannot_do_is_skipped_there_and_cannot_be_judged_elsewhere(tmp_path, capsys):
    """tools-like-tiny answers as the cpu image did (auto: words; required: a structured call cut at max_tokens).
    Served as the tiny model, the limits are SKIPPED by name and the rest passes; served as any other model, the
    same answers are no pass: auto without a call FAILs and cut arguments cannot be judged."""
    code, data, out, err = run_tools("tools-like-tiny", tmp_path, capsys, model="tiny-mtp")
    assert_named(code, data, out, err, 0, {"tool-calls-structured": PASS, "tool-markup": PASS,
                                           "tool-stream-vs-nonstream": PASS, "tool-choice-auto": SKIPPED,
                                           "tool-arguments-json": SKIPPED, "tool-arguments-schema": SKIPPED})
    details = {c["name"]: c["detail"] for c in data["checks"]}
    assert "tiny model" in details["tool-arguments-json"] and "max_tokens" in details["tool-arguments-json"]
    code, data, out, err = run_tools("tools-like-tiny", tmp_path, capsys)
    assert_named(code, data, out, err, 1, {"tool-choice-auto": FAIL, "tool-arguments-json": "CANNOT JUDGE"})


def test_a_healthy_tool_server_passes_every_tool_check(tmp_path, capsys):
    code, data, out, err = run_tools("healthy", tmp_path, capsys)
    assert_named(code, data, out, err, 0, dict.fromkeys(TOOL_CHECKS, PASS))
    rows = data["tools"]["rows"]
    assert [(r["tool_choice"], r["streamed"]) for r in rows] == [("auto", True), ("auto", False),
                                                                 ("required", True), ("required", False)]
    assert all(r["requests"] == r["with_calls"] == r["args_json"] == r["expected_tool"] == 4 for r in rows)
    assert any(line.startswith("tool_choice") for line in out)   # the table's tools section


@pytest.mark.parametrize("mode", sorted(EXPECTED))
def test_each_tool_misbehaviour_fails_in_one_line(mode, tmp_path, capsys):
    code, data, out, err = run_tools(mode, tmp_path, capsys)
    assert_named(code, data, out, err, 1, EXPECTED[mode])
    failed = [name for name, status in EXPECTED[mode].items() if status == FAIL]
    assert err.strip().startswith("verify: FAIL: ") and all(name in err for name in failed)


def test_on_the_tiny_model_auto_without_a_call_is_skipped_by_name_not_passed(tmp_path, capsys):
    """The tiny model recites words: with tool_choice=auto it never calls a tool. That is said (SKIPPED,
    with the reason), and everything else it answers is still judged."""
    code, data, out, err = run_tools("tools-auto-text", tmp_path, capsys, model="tiny-mtp")
    assert_named(code, data, out, err, 0, {"tool-choice-auto": SKIPPED, "tool-markup": PASS,
                                           "tool-stream-vs-nonstream": PASS, "tool-calls-structured": PASS})
    auto = next(c for c in data["checks"] if c["name"] == "tool-choice-auto")
    assert "tiny model" in auto["detail"] and "cannot decide to call" in auto["detail"]
    # the tiny model's required answers that break the server's tool path still fail
    code, data, out, err = run_tools("tools-required-text", tmp_path, capsys, model="tiny-mtp")
    assert_named(code, data, out, err, 1, {"tool-calls-structured": FAIL})


def test_answers_cut_at_max_tokens_are_not_judged_for_arguments():
    """A call cut by max_tokens has cut arguments: counted, not failed; nothing finished is CANNOT JUDGE."""
    workload = tools.load()
    req = tools.requests(workload, 8)[2]        # a required one, streamed
    cut = client.Result(req, finish_reason="length", tool_calls=[{"name": "get_weather", "arguments": '{"ci', "id": "x"}])
    checks = {c.name: c for c in tools.checks(workload, [cut], rule=False)}
    assert checks["tool-arguments-json"].status == "CANNOT JUDGE" and "1 cut at max_tokens" in checks["tool-arguments-json"].detail
    assert checks["tool-calls-structured"].status == PASS


def test_streamed_tool_call_deltas_are_merged_by_index():
    result = client.Result(client.Request("x", "p"))
    collector = client._Collector(result, 0.0)
    for delta in ({"tool_calls": [{"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": ""}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": '{"x": '}}]},
                  {"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}):
        collector.event({"choices": [{"index": 0, "delta": delta}]})
    collector.finish()
    assert result.tool_calls == [{"name": "f", "arguments": '{"x": 1}', "id": "a"}, {"name": "g", "arguments": "{}", "id": "b"}]


def test_the_workload_offers_what_it_expects():
    workload = tools.load()
    names = set(workload.schemas)
    assert {p.expect for p in workload.prompts} <= names and len(workload.prompts) >= 4
    assert {p.lang for p in workload.prompts} == {"en", "zh"}
    assert len(tools.requests(workload, 64)) == 4 * len(workload.prompts)
