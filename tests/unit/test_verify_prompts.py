from dsv4_images.verify import prompts, runner
from dsv4_images.verify.prompts import Prompt, check_answer


def test_the_prompt_set_is_versioned_and_covers_three_workloads_in_two_languages():
    version, ps = prompts.load("v1")
    assert version == "v1" and len({p.id for p in ps}) == len(ps)
    for workload in prompts.WORKLOADS:
        mine = [p for p in ps if p.workload == workload]
        assert len(mine) >= 8 and {p.lang for p in mine} == {"en", "zh"}
        assert all(p.answer is not None or p.check for p in mine)


def test_numeric_answers():
    p = Prompt("x", "reasoning", "en", "?", answer=4.2)
    assert check_answer(p, "12 pencils cost 12 × 0.35 = $4.20") is True
    assert check_answer(p, "The answer is 4.3") is False
    assert check_answer(Prompt("y", "reasoning", "en", "?", answer=1234), "Total: 1,234") is True
    assert check_answer(p, "no number") is False


def test_instruction_checks():
    _, ps = prompts.load("v1")
    by_id = {p.id: p for p in ps}
    assert check_answer(by_id["ifeval-three-bullets"], "- a\n- b\n- c") is True
    assert check_answer(by_id["ifeval-three-bullets"], "- a\n- b") is False
    assert check_answer(by_id["ifeval-lowercase"], "the sea is wide. it is blue.") is True
    assert check_answer(by_id["ifeval-lowercase"], "The sea.") is False
    assert check_answer(by_id["ifeval-json"], '```json\n{"city": "Tokyo", "country": "Japan"}\n```') is True
    assert check_answer(by_id["ifeval-no-commas"], "It translates code, then runs.") is False
    assert check_answer(by_id["ifeval-ends-with"], "Name things well. Is there anything else I can help with?") is True
    assert check_answer(by_id["ifeval-zh-short"], "机器学习是让计算机从数据中学习规律的方法。") is True
    assert check_answer(by_id["ifeval-zh-short"], "Machine learning learns from data.") is False
    assert check_answer(by_id["code-is-prime"], "def is_prime(n):\n    ...") is True


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
