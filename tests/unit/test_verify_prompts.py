"""The prompt sets and their answer checks: every v2 prompt can be answered right, a constant
answer fails every one, and model-written Python runs contained."""

import json
from pathlib import Path

import pytest

from dsv4_images.errors import UserError
from dsv4_images.verify import answers, prompts, runner, sandbox
from dsv4_images.verify.prompts import Prompt, check_answer

REFERENCE = json.loads((Path(__file__).parent.parent / "fixtures" / "corruption" / "v2_reference_answers.json").read_text())


def test_the_default_prompt_set_is_v2_and_every_prompt_is_checked():
    version, ps = prompts.load()
    assert version == "v2" and len({p.id for p in ps}) == len(ps)
    for workload in prompts.WORKLOADS:
        mine = [p for p in ps if p.workload == workload]
        assert len(mine) >= 8 and {p.lang for p in mine} == {"en", "zh"}
    assert all(p.expected for p in ps)
    assert all("python" in p.expected for p in ps if p.workload == "chat-code")


def test_v1_stays_loadable_and_unknown_sets_are_one_line_errors():
    version, ps = prompts.load("v1")
    assert version == "v1" and len(ps) == 30
    with pytest.raises(UserError, match="no prompt set 'v9' \\(have: v1, v2\\)"):
        prompts.load("v9")


def test_every_v2_prompt_has_a_right_answer_that_passes():
    _, ps = prompts.load("v2")
    failures = {p.id: answers.check(p.expected, REFERENCE["answers"][p.id]).detail for p in ps
                if not check_answer(p, REFERENCE["answers"][p.id])}
    assert failures == {}


@pytest.mark.parametrize("constant", ["OK.", "好的。", "", "Sure! Here is the answer you asked for."])
def test_a_constant_answer_fails_every_v2_prompt(constant):
    _, ps = prompts.load("v2")
    assert [p.id for p in ps if check_answer(p, constant)] == []


def test_same_answer_to_different_prompts():
    groups = answers.same_answer_to_different_prompts({"a": "OK.", "b": "ok. ", "c": "OK.", "d": "Paris"})
    assert groups == [["a", "b", "c"]]


def test_numeric_answers():
    p = Prompt("x", "reasoning", "en", "?", answer=4.2)
    assert check_answer(p, "12 pencils cost 12 × 0.35 = $4.20") is True
    assert check_answer(p, "The answer is 4.3") is False
    assert check_answer(Prompt("y", "reasoning", "en", "?", answer=1234), "Total: 1,234") is True
    assert check_answer(p, "no number") is False
    assert answers.check({"number": 11}, "So 11 apples are left after 2 people take some.").passed
    assert answers.check({"number": 735}, "The sum is $$\\boxed{735}$$ (14 terms)").passed
    assert answers.check({"number": -5}, "x = −5").passed
    assert answers.check({"number": 0.75}, "The probability is 3/4").passed
    assert not answers.check({"number": 11}, "16 - 5 = 12, so 12 apples are left.").passed


def test_format_checks():
    assert answers.check({"bullets": 3}, "- a\n  - a1\n- b\n- c").passed
    assert not answers.check({"bullets": 3}, "- a\n- b").passed
    assert answers.check({"json_keys": ["city"], "json_values": {"city": "tokyo"}}, 'Sure:\n```json\n{"city": "Tokyo"}\n```').passed
    assert not answers.check({"json_keys": ["city", "country"]}, '{"city": "Tokyo"}').passed
    extra = '{"city": "Tokyo", "country": "Japan", "landmark": "Tokyo Tower"}'
    assert not answers.check({"json_keys": ["city", "country"]}, extra).passed          # the keys asked for, no more
    assert answers.check({"json_has_keys": ["city", "country"]}, extra).passed          # at least these
    assert answers.check({"max_words": 10}, "机器学习是方法").passed            # 7 CJK characters: 7 words
    assert not answers.check({"max_words": 5}, "机器学习是一种方法").passed
    assert answers.check({"regex": "<<[^<>]+>>"}, "<<Title>>\nline").passed
    assert answers.check({"contains": ["canberra"]}, "Canberra").passed
    assert not answers.check({"ends_with": "help with?"}, "Done.").passed
    with pytest.raises(ValueError, match="unknown answer check"):
        answers.check({"nmber": 1}, "1")


def test_python_checks_run_the_asserts():
    spec = {"function": "add", "asserts": ["add(2, 3) == 5"]}
    assert answers.check({"python": spec}, "```python\ndef add(a, b):\n    return a + b\n```").passed
    wrong = answers.check({"python": spec}, "```python\ndef add(a, b):\n    return a - b\n```")
    assert not wrong.passed and "AssertionError" in wrong.detail
    assert answers.check({"python": spec}, "def add(a, b):\n    return a + b").passed      # no fence
    assert answers.check({"python": spec}, "```python\ndef plus(a, b):\n    return a + b\n```").detail == "no function add()"
    assert answers.check({"python": spec}, "```python\ndef add(a, b)\n    return a + b\n```").detail == "no Python that parses"
    main = "```python\ndef add(a, b):\n    return a + b\n\nif __name__ == '__main__':\n    input()\n```"
    assert answers.check({"python": spec}, main).passed            # the __main__ block does not run


def test_sandbox_contains_the_code(report):
    isolation = sandbox.run_python("x = 1", ["x == 1"]).isolation
    report["sandbox_isolation"] = isolation
    assert sandbox.run_python("import sys\nsys.exit(0)", ["True"]).passed is False     # exiting early is not passing
    slow = sandbox.run_python("import time\ntime.sleep(30)", [], wall_s=2)
    assert not slow.passed and slow.detail.startswith("timeout")
    spin = sandbox.run_python("while True:\n    pass", [], cpu_s=1, wall_s=60)
    assert not spin.passed and "CPU" in spin.detail
    assert "MemoryError" in sandbox.run_python("x = bytearray(4 << 30)", []).detail
    assert "File too large" in sandbox.run_python("open('big', 'wb').write(b'x' * (64 << 20))", []).detail
    forks = sandbox.run_python(
        "import os, time\nn = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n            time.sleep(3)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)\nassert n < 200, n", [])
    assert forks.passed, forks.detail                          # RLIMIT_NPROC stopped the forks
    if "no network" in isolation:
        net = sandbox.run_python("import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=3)", [])
        assert not net.passed and "unreachable" in net.detail.lower()
    else:
        assert "NO network isolation" in isolation             # said, not hidden
    if "uid 65534" in isolation:
        assert "Permission denied" in sandbox.run_python("open('/etc/dsv4-sandbox-test', 'w')", []).detail


def test_regressions_between_concurrency_levels_are_called_out():
    def phase(c, cls):
        return {"workload": "reasoning", "concurrency": c, "prompts": {"p1": {"class": cls, "symptoms": ["x"]},
                                                                       "p2": {"class": "correct", "symptoms": []}}}
    found = runner.concurrency_regressions([phase(1, "correct"), phase(4, "corrupted"), phase(8, "corrupted")])
    assert [(r["prompt"], r["clean_at"], r["corrupted_at"]) for r in found] == [("p1", 1, 4), ("p1", 1, 8)]
    assert runner.concurrency_regressions([phase(1, "corrupted"), phase(4, "corrupted")]) == []


def test_judge_applies_every_threshold():
    th = {"min_acceptance": {"reasoning": 0.8}, "max_corrupted": 0, "max_error_rate": 0.0}
    spec = {"drafts": 10, "draft_tokens": 20, "accepted_tokens": 15}
    ok = {"workload": "reasoning", "concurrency": 1, "requests": 2, "errors": 0, "spec_decode": spec,
          "prompts": {"a": {"class": "correct", "symptoms": []}}}
    assert runner.judge([ok], th) == ["reasoning: acceptance 75.0% below the threshold 80%"]
    assert runner.judge([ok], {**th, "min_acceptance": {"reasoning": 0.7}}) == []
    bad = {**ok, "errors": 1, "spec_decode": {"drafts": 0, "draft_tokens": 0, "accepted_tokens": 0},
           "prompts": {"a": {"class": "corrupted", "symptoms": ["rule"]}}}
    failures = runner.judge([bad], th)
    assert failures[0] == "error rate 1/2 above 0%"
    assert failures[1] == "1 corrupted outputs: a (c=1)"
    assert failures[2] == "reasoning: MTP is not firing (no spec-decode drafts)"


def test_every_reference_answer_reads_clean_to_the_corruption_detectors():
    from dsv4_images.verify.corruption import detect
    _, v2 = prompts.load("v2")
    flagged = {p.id: [str(f) for f in detect(REFERENCE["answers"][p.id], prompt=p.prompt, lang=p.lang)] for p in v2}
    assert {k: v for k, v in flagged.items() if v} == {}
