"""`build.py verify`: run the prompt set against a deployment, phase by phase, and judge it.

A phase is one workload at one concurrency. Around each phase the spec-decode counters are read,
so acceptance is measured per workload. Every output is classified (errored, corrupted, truncated,
wrong, correct) and the target's thresholds from matrix.toml decide the verdict.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import datetime, timezone

from . import client, phase
from .prompts import Prompt, check_answer

CLASSES = ("correct", "wrong", "truncated", "errored", "corrupted")


def classify(outcome: phase.Outcome, prompt: Prompt, check_answers: bool) -> str:
    r = outcome.result
    if r.error:
        return "errored"
    if outcome.findings:
        return "corrupted"
    if r.finish_reason == "length":
        return "truncated"
    if check_answers and check_answer(prompt, r.content) is False:
        return "wrong"
    return "correct"


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class ProgressBar:
    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.done, self.stream = total, 0, stream
        self.enabled = stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<28}")
            self.stream.flush()
            if self.done == self.total:
                self.stream.write("\n")


def _phase_summary(ph: phase.Phase, prompts: dict[str, Prompt], check_answers: bool) -> dict:
    classes = {c: 0 for c in CLASSES}
    per_prompt = {}
    finish: dict[str, int] = {}
    for o in ph.outcomes:
        cls = classify(o, prompts[o.result.request.id], check_answers)
        classes[cls] += 1
        per_prompt[o.result.request.id] = {"class": cls, "symptoms": [str(f) for f in o.findings],
                                           "finish_reason": o.result.finish_reason, "error": o.result.error}
        key = str(o.result.finish_reason or "error")
        finish[key] = finish.get(key, 0) + 1
    judged = classes["correct"] + classes["wrong"] + classes["truncated"]
    return {
        "requests": len(ph.outcomes), "errors": ph.errors, "finish_reasons": finish, "classes": classes,
        "accuracy": classes["correct"] / judged if check_answers and judged else None,
        "output_tokens": ph.output_tokens, "wall_s": round(ph.wall_s, 3),
        "output_tokens_per_s": round(ph.output_tokens_per_s, 2),
        "request_tokens_per_s_median": _median([o.result.tokens_per_s for o in ph.outcomes]),
        "tpot_ms_median": (lambda v: round(v * 1000, 2) if v else None)(_median([o.result.tpot_s for o in ph.outcomes])),
        "ttft_ms_median": (lambda v: round(v * 1000, 1) if v else None)(_median([o.result.ttft_s for o in ph.outcomes])),
        "spec_decode": ph.spec.as_dict(), "prompts": per_prompt,
    }


def run(url: str, model: str, prompts: list[Prompt], concurrencies: list[int], max_tokens: int, temperature: float,
        rule: bool, baseline_url: str | None = None, baseline_model: str | None = None, emit=print) -> list[dict]:
    """Every (workload, concurrency) phase, MTP deployment first, then the baseline on the same requests."""
    by_id = {p.id: p for p in prompts}
    workloads = [w for w in ("chat-code", "reasoning", "instructions") if any(p.workload == w for p in prompts)]
    total = len(prompts) * len(concurrencies) * (2 if baseline_url else 1)
    bar = ProgressBar(total)
    phases = []
    for workload in workloads:
        selected = [p for p in prompts if p.workload == workload]
        requests = [client.Request(p.id, p.prompt, max_tokens=max_tokens, temperature=temperature, seed=i)
                    for i, p in enumerate(selected)]
        for c in concurrencies:
            label = f"{workload} c={c}"
            ph = phase.measure(url, model, requests, c, rule=rule, on_done=lambda _r: bar.step(label))
            summary = {"workload": workload, "concurrency": c, **_phase_summary(ph, by_id, check_answers=not rule)}
            if baseline_url:
                base = phase.measure(baseline_url, baseline_model, requests, c, rule=rule,
                                     on_done=lambda _r: bar.step(label + " baseline"))
                b = _phase_summary(base, by_id, check_answers=not rule)
                summary["baseline"] = {k: b[k] for k in ("output_tokens_per_s", "request_tokens_per_s_median",
                                                         "tpot_ms_median", "classes", "spec_decode")}
                summary["speedup_output_tokens_per_s"] = round(summary["output_tokens_per_s"] / b["output_tokens_per_s"], 3) \
                    if b["output_tokens_per_s"] else None
                if b["tpot_ms_median"] and summary["tpot_ms_median"]:
                    summary["speedup_decode_tpot"] = round(b["tpot_ms_median"] / summary["tpot_ms_median"], 3)
            phases.append(summary)
    return phases


def concurrency_regressions(phases: list[dict]) -> list[dict]:
    """Prompts clean (not corrupted, not errored) at the lowest concurrency but corrupted at a higher one."""
    out = []
    for workload in dict.fromkeys(p["workload"] for p in phases):
        ps = sorted((p for p in phases if p["workload"] == workload), key=lambda p: p["concurrency"])
        low = ps[0]
        for high in ps[1:]:
            for pid, result in high["prompts"].items():
                before = low["prompts"][pid]
                if result["class"] == "corrupted" and before["class"] not in ("corrupted", "errored"):
                    out.append({"prompt": pid, "workload": workload, "clean_at": low["concurrency"],
                                "corrupted_at": high["concurrency"], "symptoms": result["symptoms"]})
    return out


def judge(phases: list[dict], thresholds: dict, expect_mtp: bool = True) -> list[str]:
    """The failed thresholds, each one line (empty: the deployment passes)."""
    failures = []
    requests = sum(p["requests"] for p in phases)
    errors = sum(p["errors"] for p in phases)
    if requests and errors / requests > thresholds["max_error_rate"]:
        failures.append(f"error rate {errors}/{requests} above {thresholds['max_error_rate']:.0%}")
    corrupted = [(p["workload"], p["concurrency"], pid, r["symptoms"]) for p in phases for pid, r in p["prompts"].items()
                 if r["class"] == "corrupted"]
    if len(corrupted) > thresholds["max_corrupted"]:
        names = ", ".join(f"{pid} (c={c})" for _, c, pid, _ in corrupted[:12])
        failures.append(f"{len(corrupted)} corrupted outputs: {names}{' ...' if len(corrupted) > 12 else ''}")
    for workload in dict.fromkeys(p["workload"] for p in phases):
        ps = [p for p in phases if p["workload"] == workload]
        drafts = sum(p["spec_decode"]["drafts"] for p in ps)
        draft_tokens = sum(p["spec_decode"]["draft_tokens"] for p in ps)
        accepted = sum(p["spec_decode"]["accepted_tokens"] for p in ps)
        if expect_mtp and drafts == 0:
            failures.append(f"{workload}: MTP is not firing (no spec-decode drafts)")
            continue
        minimum = thresholds["min_acceptance"].get(workload)
        if expect_mtp and minimum is not None and draft_tokens and accepted / draft_tokens < minimum:
            failures.append(f"{workload}: acceptance {accepted / draft_tokens:.1%} below the threshold {minimum:.0%}")
    return failures


def workload_acceptance(phases: list[dict]) -> dict:
    out = {}
    for workload in dict.fromkeys(p["workload"] for p in phases):
        ps = [p for p in phases if p["workload"] == workload]
        draft_tokens = sum(p["spec_decode"]["draft_tokens"] for p in ps)
        drafts = sum(p["spec_decode"]["drafts"] for p in ps)
        accepted = sum(p["spec_decode"]["accepted_tokens"] for p in ps)
        out[workload] = {"acceptance_rate": accepted / draft_tokens if draft_tokens else None,
                         "mean_acceptance_length": 1 + accepted / drafts if drafts else None}
    return out


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
