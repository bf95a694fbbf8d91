"""The model-based signals' judgements, on results built by hand, at and around each threshold."""

from __future__ import annotations

import math

import pytest

from dsv4_images.verify import signals
from dsv4_images.verify.checks import CANNOT, FAIL, PASS, SKIPPED
from dsv4_images.verify.client import Request, Result


def res(pid: str, text: str = "", ids=(), error: str | None = None, logprobs=None, problem=None) -> Result:
    return Result(Request(pid, "p"), content=text, token_ids=list(ids), error=error,
                  error_kind="http-status" if error else None, logprobs=logprobs, logprobs_problem=problem)


def test_divergence_point_and_rate():
    d = signals.divergence(res("a", ids=[1, 2, 3, 4]), res("a", ids=[1, 2, 9, 9]))
    assert d == {"identical": False, "first_divergence": 2, "unit": "tokens", "divergence_rate": 0.5, "length": 4}
    assert signals.divergence(res("a", "x y", [1, 2]), res("a", "x y", [1, 2]))["identical"]
    words = signals.divergence(res("a", "one two three"), res("a", "one two four"))
    assert (words["unit"], words["first_divergence"]) == ("words", 2)


def _sets(n_same: int, n_diff: int):
    a = [res(f"p{i}", ids=[1, 2, 3]) for i in range(n_same + n_diff)]
    b = [res(f"p{i}", ids=[1, 2, 3] if i < n_same else [1, 5, 5]) for i in range(n_same + n_diff)]
    return a, b


@pytest.mark.parametrize("same, diff, status", [(9, 1, PASS), (8, 2, FAIL), (5, 0, PASS), (0, 3, FAIL)])
def test_baseline_needs_more_than_80_percent_identical(same, diff, status):
    """vLLM's own MTP correctness test: > 80% of greedy prompts identical; exactly 80% is not enough."""
    check = signals.baseline(*_sets(same, diff), off_drafts=0)
    assert check.status == status and check.name == "baseline-identical"
    assert check.figures["identical"] == same and check.figures["compared"] == same + diff


def test_baseline_that_runs_mtp_or_never_answers_cannot_be_compared():
    assert signals.baseline(*_sets(5, 0), off_drafts=12).status == CANNOT
    errored = [res(f"p{i}", error="HTTP 500") for i in range(3)]
    assert signals.baseline(errored, errored, off_drafts=0).status == CANNOT
    unconfirmed = signals.baseline(*_sets(5, 0), off_drafts=None)
    assert unconfirmed.status == PASS and "could not confirm" in unconfirmed.detail


def test_an_errored_prompt_keeps_a_passing_comparison_from_passing():
    a, b = _sets(9, 0)
    b.append(res("p9", error="HTTP 500"))
    a.append(res("p9", ids=[1]))
    assert signals.baseline(a, b, off_drafts=0).status == CANNOT


def test_dropped_words_only_when_deletion_is_the_only_difference():
    assert signals.dropped_words("the cat on the mat", "the cat sat on the mat") == ["sat"]
    assert signals.dropped_words("the dog sat", "the cat sat") == []          # a replacement: divergence
    assert signals.dropped_words("the cat sat on", "the cat sat") == []       # longer stream: no drop


def test_stream_vs_nonstream_names_dropped_words_even_with_identical_tokens():
    whole = [res(f"p{i}", "alpha beta gamma delta", [1, 2, 3, 4]) for i in range(10)]
    streamed = [res(f"p{i}", "alpha beta gamma delta", [1, 2, 3, 4]) for i in range(9)]
    streamed.append(res("p9", "alpha gamma delta", [1, 2, 3, 4]))
    check = signals.stream_vs_whole(streamed, whole)
    assert check.status == FAIL and "p9: same tokens, streamed text differs (dropped 'beta')" in check.detail
    assert signals.stream_vs_whole(whole, whole).status == PASS


def test_concurrency_fails_on_corruption_seen_only_in_the_batch():
    a, b = _sets(10, 0)
    assert signals.concurrency(a, b, 4, []).status == PASS
    check = signals.concurrency(a, b, 4, ["p3"])
    assert check.status == FAIL and "corrupted only at c=4: p3" in check.detail and check.figures["level"] == 4


def lp(values, tops=None):
    return list(zip(values, tops or [None] * len(values)))


def test_logprob_thresholds():
    assert math.isclose(signals.UNLIKELY_LOGPROB, math.log(1e-4))
    two = signals.logprob_runs(lp([-0.1, -10, -10, -0.2, -10]), greedy=False)
    assert two["longest_unlikely_run"] == 2
    three = signals.logprob_runs(lp([-10, -10, -10]), greedy=False)
    assert three["longest_unlikely_run"] == 3
    assert signals.logprob_runs(lp([-9.0] * 10), greedy=False)["longest_unlikely_run"] == 0   # p = 1.2e-4: fine
    greedy = signals.logprob_runs(lp([-0.5, -0.5, -0.5], [-0.5, -0.46, -0.3]), greedy=True)
    assert greedy["not_argmax"] == 1       # 0.04 below the top is a tie; 0.2 below is another token


def test_logprobs_check_statuses():
    clean = [res(f"p{i}", "x", logprobs=lp([-0.1] * 20, [-0.1] * 20)) for i in range(4)]
    assert signals.logprobs(clean, greedy=True, drafts=40).status == PASS
    bad = clean[:3] + [res("p3", "reads fine", logprobs=lp([-0.1, -12, -12, -12, -0.1]))]
    check = signals.logprobs(bad, greedy=False, drafts=40)
    assert check.status == FAIL and "p3 (3 in a row)" in check.detail
    assert signals.logprobs([res("p", "x")], greedy=True, drafts=1).status == SKIPPED          # none returned
    refused = [res("p", error="HTTP 400: logprobs are not supported")]
    assert signals.logprobs(refused, greedy=True, drafts=None).status == SKIPPED
    assert signals.logprobs([res("p", error="HTTP 500: x")], greedy=True, drafts=None).status == CANNOT
    assert signals.logprobs([res("p", "x", problem="token 0 has logprob nan")], greedy=True, drafts=1).status == CANNOT
    assert "target model alone" in signals.logprobs(clean, greedy=True, drafts=0).detail


def w(acc, drafts=50, **extra):
    return {"acceptance": acc, "drafts": drafts if acc is not None else None, **extra}


@pytest.mark.parametrize("first, status", [(0.95, PASS), (0.80, PASS), (0.79, FAIL), (0.0, FAIL)])
def test_canary_threshold(first, status):
    assert signals.canary([w(first)]).status == status


def test_canary_without_drafts_or_metrics():
    assert signals.canary([{"acceptance": None, "drafts": 0}]).status == FAIL
    assert signals.canary([{"acceptance": None, "problem": "metrics-unreadable", "detail": "HTTP 500"}]).status == CANNOT
    assert signals.canary([{"acceptance": None, "error": "closed: x"}]).status == CANNOT
    assert signals.canary([]).status == CANNOT


@pytest.mark.parametrize("series, status", [
    ([0.9, 0.9, 0.88, 0.91], PASS),
    ([0.9, 0.71, 0.9], PASS),            # 19 points: numerics, not a collapse
    ([0.9, 0.9, 0.69], FAIL),            # 21 points under the best earlier window
    ([0.5, 0.95, 0.7], FAIL),            # against the best window so far, not only the first
    ([0.9, None, 0.9], CANNOT),          # a window that could not be measured
    ([0.9], CANNOT),
])
def test_collapse_detector(series, status):
    check = signals.collapse([w(a) for a in series])
    assert check.status == status, check.detail
    assert check.figures["windows"] == series
