"""Held-out v2: the corruption detectors measured on 188 answers written by a separate session that
never saw the detectors, the tuning set or held-out v1 (tests/fixtures/corruption/heldout-v2.json).

Its role: measurement only. It was first evaluated on 2026-11-30 at 85/91 corrupted detected (93.4%)
and 2/97 clean flagged (2.1%), after the detectors were frozen, and nothing was tuned on it. This test
keeps that measurement honest over time (a regression below the target fails), but a detector change
must never be tuned against it: when it has been looked into, it becomes tuning data and a new
held-out set is written, as happened to held-out v1 (76.8%/18.3% at its one measurement)."""

from pathlib import Path

from dsv4_images.verify import evaluate

HELDOUT_V2 = Path(__file__).parent.parent / "fixtures" / "corruption" / "heldout-v2.json"


def test_held_out_v2_meets_the_target(report):
    result = evaluate.evaluate(evaluate.load(HELDOUT_V2))
    figures = result.as_dict()
    report["corruption_heldout_v2"] = {k: figures[k] for k in ("corrupted", "clean_flagged", "misses")}
    assert result.detection >= 0.90, figures["misses"]
    assert result.false_positive_rate <= 0.05, figures["false_positives"]
