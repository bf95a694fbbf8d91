"""Measure the corruption detectors (and answer checks) on a labelled set of answers.

    python -m dsv4_images.verify.evaluate FILE [--json OUT] [--show-caught]

FILE: {"items": [{"id", "lang", "prompt", "answer", "finish_reason", "label": "corrupted"|"clean",
"kind", "why", optional "expected": {answer-check keys}, optional completion_tokens, max_tokens,
context_limited, max_model_len, prompt_tokens, reasoning_in_content, finish_reason_missing}]}.
An item is flagged when a detector finds a symptom, or when it has `expected` and the answer
check fails. Prints the detection rate on corrupted items, the false-positive rate on clean ones,
both per kind, and every miss and false positive with its reason.

finish_reason in the file is what the server sent; null or absent means it was not recorded, and
the text is judged with `corruption.UNKNOWN` (its ending as a stop's would be). An item that
records a stream which ended without any finish reason says so with "finish_reason_missing": true
(judged with finish_reason=None, as verify passes it).

The labelled sets in tests/fixtures/corruption/ and their roles (TUNING_INPUTS): tuning.json was
written for the project and the detectors were tuned on it; heldout-v1.json was written by a
separate session blind to the code, measured once (2026-11-30: 63/82 corrupted detected, 76.8%;
13/71 clean flagged, 18.3%), then used for tuning. Neither measures generalisation any more; only
a set the detectors were never tuned on does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import REPO_ROOT
from ..errors import UserError
from . import answers
from .corruption import UNKNOWN, detect

LABELS = ("corrupted", "clean")
REQUIRED = ("id", "prompt", "answer", "label")
PASSED_ON = ("completion_tokens", "max_tokens", "context_limited", "max_model_len", "prompt_tokens",
             "reasoning_in_content")
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "corruption"
TUNING_INPUTS = {
    FIXTURES / "tuning.json": "tuning set, written for the project; the detectors were tuned on it",
    FIXTURES / "heldout-v1.json": "held-out v1, measured once at 76.8%/18.3% on 2026-11-30, then used for tuning",
}


@dataclass
class Judged:
    item: dict
    findings: list[str]
    answer_check: str | None          # None: no expected; "" passed; else why it failed

    @property
    def flagged(self) -> bool:
        return bool(self.findings) or bool(self.answer_check)


@dataclass
class Tally:
    n: int = 0
    flagged: int = 0

    def add(self, flagged: bool) -> None:
        self.n += 1
        self.flagged += flagged

    def __str__(self) -> str:
        return f"{self.flagged}/{self.n} ({self.flagged / self.n:.1%})" if self.n else "0/0"


@dataclass
class Report:
    judged: list[Judged]
    totals: dict[str, Tally] = field(default_factory=dict)
    kinds: dict[tuple[str, str], Tally] = field(default_factory=dict)

    @property
    def detection(self) -> float:
        t = self.totals.get("corrupted")
        return t.flagged / t.n if t and t.n else 0.0

    @property
    def false_positive_rate(self) -> float:
        t = self.totals.get("clean")
        return t.flagged / t.n if t and t.n else 0.0

    def as_dict(self) -> dict:
        return {
            "corrupted": str(self.totals.get("corrupted", Tally())),
            "clean_flagged": str(self.totals.get("clean", Tally())),
            "detection": round(self.detection, 4), "false_positive_rate": round(self.false_positive_rate, 4),
            "per_kind": {f"{label}/{kind}": str(t) for (label, kind), t in sorted(self.kinds.items())},
            "misses": [j.item["id"] for j in self.judged if j.item["label"] == "corrupted" and not j.flagged],
            "false_positives": {j.item["id"]: j.findings + ([f"answer: {j.answer_check}"] if j.answer_check else [])
                                for j in self.judged if j.item["label"] == "clean" and j.flagged},
        }


def load(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not UTF-8 JSON ({exc})") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise UserError(f"{path}: expected {{\"items\": [...]}} with at least one item")
    for n, item in enumerate(items):
        where = f"{path}: item {n} ({item.get('id', '?') if isinstance(item, dict) else '?'})"
        if not isinstance(item, dict):
            raise UserError(f"{where}: not an object")
        missing = [k for k in REQUIRED if k not in item]
        if missing:
            raise UserError(f"{where}: missing {', '.join(missing)}")
        if item["label"] not in LABELS:
            raise UserError(f"{where}: label must be one of {', '.join(LABELS)}, not {item['label']!r}")
        if not isinstance(item["answer"], str) or not isinstance(item["prompt"], str):
            raise UserError(f"{where}: prompt and answer must be strings")
        if not all(isinstance(item.get(k), (str, type(None))) for k in ("lang", "finish_reason")):
            raise UserError(f"{where}: lang and finish_reason must be strings or null")
        for key in ("context_limited", "reasoning_in_content", "finish_reason_missing"):
            if not isinstance(item.get(key, False), (bool, type(None))):
                raise UserError(f"{where}: {key} must be true, false or null")
        if item.get("finish_reason_missing") and item.get("finish_reason") is not None:
            raise UserError(f"{where}: finish_reason_missing contradicts finish_reason {item['finish_reason']!r}")
        for key in ("completion_tokens", "max_tokens", "max_model_len", "prompt_tokens"):
            if not isinstance(item.get(key, 0), (int, type(None))) or isinstance(item.get(key), bool):
                raise UserError(f"{where}: {key} must be an integer")
        if item.get("expected") is not None:
            try:
                answers.validate(item["expected"])
            except ValueError as exc:
                raise UserError(f"{where}: expected: {exc} (keys: {', '.join(answers.KEYS)})") from None
    return items


def judge(item: dict) -> Judged:
    extra = {k: item[k] for k in PASSED_ON if item.get(k) is not None}
    reason = item.get("finish_reason")
    if reason is None:
        reason = None if item.get("finish_reason_missing") else UNKNOWN
    findings = detect(item["answer"], prompt=item["prompt"], finish_reason=reason, lang=item.get("lang"), **extra)
    verdict = answers.check(item["expected"], item["answer"]) if item.get("expected") else None
    return Judged(item, [str(f) for f in findings], None if verdict is None else verdict.detail)


def evaluate(items: list[dict]) -> Report:
    report = Report([judge(item) for item in items])
    for j in report.judged:
        label, kind = j.item["label"], j.item.get("kind", "?")
        report.totals.setdefault(label, Tally()).add(j.flagged)
        report.kinds.setdefault((label, kind), Tally()).add(j.flagged)
    return report


def render(report: Report, show_clean: bool = False) -> str:
    lines = [f"corrupted detected: {report.totals.get('corrupted', Tally())}",
             f"clean flagged (false positives): {report.totals.get('clean', Tally())}", "", "per kind:"]
    for (label, kind), t in sorted(report.kinds.items()):
        lines.append(f"  {label:<10} {kind:<18} {t}")
    misses = [j for j in report.judged if j.item["label"] == "corrupted" and not j.flagged]
    fps = [j for j in report.judged if j.item["label"] == "clean" and j.flagged]
    lines.append(f"\nmissed ({len(misses)}):")
    lines += [f"  {j.item['id']} [{j.item.get('kind')}]: {j.item.get('why', '')}" for j in misses]
    lines.append(f"\nfalse positives ({len(fps)}):")
    for j in fps:
        why = j.findings + ([f"answer check: {j.answer_check}"] if j.answer_check else [])
        lines.append(f"  {j.item['id']} [{j.item.get('kind')}]: {' | '.join(why)[:300]}")
    if show_clean:
        lines.append("\ncaught:")
        for j in report.judged:
            if j.item["label"] == "corrupted" and j.flagged:
                why = j.findings + ([f"answer check: {j.answer_check}"] if j.answer_check else [])
                lines.append(f"  {j.item['id']}: {' | '.join(why)[:200]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsv4_images.verify.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--show-caught", action="store_true", help="list what caught each corrupted item")
    args = parser.parse_args(argv)
    try:
        report = evaluate(load(args.file))
        print(render(report, args.show_caught))
        if args.json:
            try:
                args.json.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n")
            except OSError as exc:
                raise UserError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:                 # `... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
