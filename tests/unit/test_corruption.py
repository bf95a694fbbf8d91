"""The corruption detectors on a fixture corpus written for this project: every symptom must be
detected, and no clean answer (English or Chinese, prose, code, math) may be flagged."""

import json
from pathlib import Path

import pytest

from dsv4_images.verify.corruption import SYMPTOMS, detect, rule_findings
from dsv4_images.in_image import tinymodel

CORPUS = json.loads((Path(__file__).parent.parent / "fixtures" / "corruption_corpus.json").read_text())


def test_the_corpus_covers_every_text_symptom():
    covered = {c["symptom"] for c in CORPUS["corrupted"]}
    assert covered == set(SYMPTOMS) - {"empty", "truncated-without-reason"}
    assert {c["id"][:2] for c in CORPUS["clean"]} >= {"en", "zh"}


@pytest.mark.parametrize("case", CORPUS["corrupted"], ids=lambda c: c["id"])
def test_each_corrupted_variant_is_detected_as_its_symptom(case):
    found = {f.symptom for f in detect(case["text"], prompt=case["prompt"])}
    assert case["symptom"] in found


@pytest.mark.parametrize("case", CORPUS["clean"], ids=lambda c: c["id"])
def test_no_clean_answer_is_flagged(case):
    assert [str(f) for f in detect(case["text"], prompt=case["prompt"])] == []


def test_detection_and_false_positive_rates(report):
    per_symptom = {}
    for case in CORPUS["corrupted"]:
        hit = case["symptom"] in {f.symptom for f in detect(case["text"], prompt=case["prompt"])}
        n, k = per_symptom.get(case["symptom"], (0, 0))
        per_symptom[case["symptom"]] = (n + 1, k + hit)
    false_positives = sum(1 for c in CORPUS["clean"] if detect(c["text"], prompt=c["prompt"]))
    report["detectors"] = {"detection": {s: f"{k}/{n}" for s, (n, k) in sorted(per_symptom.items())},
                           "false_positives": f"{false_positives}/{len(CORPUS['clean'])}"}
    assert all(n == k for n, k in per_symptom.values()) and false_positives == 0


def test_chinese_answer_to_a_chinese_prompt_is_not_script_mixing_but_is_for_an_english_one():
    zh = "设兔有 x 只，解得 x = 12。"
    assert detect(zh, prompt="兔有多少只？") == []
    assert [f.symptom for f in detect(zh, prompt="How many rabbits?")] == ["script-mixing"]


def test_empty_and_cut_off_outputs():
    assert [f.symptom for f in detect("", finish_reason="stop")] == ["empty"]
    assert [f.symptom for f in detect("partial answer", finish_reason=None)] == ["truncated-without-reason"]
    assert [f.symptom for f in detect("partial", finish_reason="length", completion_tokens=3, max_tokens=64)] == \
        ["truncated-without-reason"]
    assert detect("a full answer of sixty four tokens", finish_reason="length", completion_tokens=64, max_tokens=64) == []


def test_special_tokens_quoted_in_the_prompt_are_not_leaks():
    prompt = "What does <｜begin▁of▁sentence｜> mean?"
    assert detect("It marks the start: <｜begin▁of▁sentence｜>.", prompt=prompt) == []


def test_the_tiny_model_rule():
    first = tinymodel.next_token(5)
    good = [first, tinymodel.next_token(first), tinymodel.next_token(tinymodel.next_token(first))]
    assert rule_findings(5, good) == []
    bad = rule_findings(5, [good[0], good[2], good[1]])
    assert len(bad) == 1 and bad[0].detail.startswith("2/3 tokens break the rule; first at 1")
