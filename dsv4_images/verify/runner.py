"""`build.py verify`: run the prompt set against a deployment, phase by phase, and judge it.

A phase is one workload at one concurrency. Around each phase the spec-decode counters are read,
so acceptance is measured per workload; the draft-health canary runs before the first phase, after
each one and at the end. Every output is classified (errored, corrupted, context-limited,
truncated, wrong, correct) and the target's thresholds from matrix.toml, plus the checks of what
verify could and could not measure, decide the verdict.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import client, phase, probes, signals
from .checks import CANNOT, FAIL, PASS, Check
from .endpoint import Endpoint
from .prompts import Prompt, check_answer

CLASSES = ("correct", "wrong", "truncated", "context-limited", "errored", "corrupted")
WORKLOADS = ("chat-code", "reasoning", "instructions")
# The prompt set's tasks are easy and mechanically checked; the model card's scores on far harder
# sets are well above this. Garbage, or one answer for everything, scores near 0.
MIN_ACCURACY = 0.5
MIN_JUDGED = 5          # fewer finished answers than this say nothing about accuracy
CONSTANT_SHARE = 0.5    # one answer text for more than half of the distinct prompts


def classify(outcome: phase.Outcome, prompt: Prompt, check_answers: bool) -> str:
    r = outcome.result
    if r.error:
        return "errored"
    if outcome.findings:
        return "corrupted"
    if outcome.context_limited:
        return "context-limited"
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
        self.total, self.done, self.stream = max(total, 1), 0, stream
        self.enabled = stream.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<28}")
            self.stream.flush()
            if self.done == self.total:
                self.stream.write("\n")


def _spec(ph: phase.Phase) -> dict:
    if ph.window.delta is None:
        return {"drafts": None, "draft_tokens": None, "accepted_tokens": None, "acceptance_rate": None,
                "mean_acceptance_length": None, "per_position_acceptance": {},
                "problem": ph.window.problem, "problem_detail": ph.window.detail}
    return ph.spec.as_dict()


def _phase_summary(ph: phase.Phase, prompts: dict[str, Prompt], check_answers: bool) -> dict:
    classes = {c: 0 for c in CLASSES}
    per_prompt = {}
    finish: dict[str, int] = {}
    for o in ph.outcomes:
        cls = classify(o, prompts[o.result.request.id], check_answers)
        classes[cls] += 1
        per_prompt[o.result.request.id] = {"class": cls, "symptoms": [str(f) for f in o.findings],
                                           "finish_reason": o.result.finish_reason, "error": o.result.error,
                                           "error_kind": o.result.error_kind, "max_tokens": o.result.request.max_tokens,
                                           "prompt_tokens": o.result.prompt_tokens,
                                           "completion_tokens": o.result.completion_tokens}
        key = str(o.result.finish_reason or "error")
        finish[key] = finish.get(key, 0) + 1
    judged = classes["correct"] + classes["wrong"] + classes["truncated"] + classes["context-limited"]
    unsent = sum(1 for o in ph.outcomes if o.result.error_kind in client.NOT_THE_SERVERS)
    return {
        "requests": len(ph.outcomes), "errors": ph.errors - unsent, "not_judged": unsent,
        "finish_reasons": finish, "classes": classes,
        "accuracy": classes["correct"] / judged if check_answers and judged else None,
        "output_tokens": ph.output_tokens, "wall_s": round(ph.wall_s, 3),
        "output_tokens_per_s": round(ph.output_tokens_per_s, 2),
        "request_tokens_per_s_median": _median([o.result.tokens_per_s for o in ph.outcomes]),
        "tpot_ms_median": (lambda v: round(v * 1000, 2) if v else None)(_median([o.result.tpot_s for o in ph.outcomes])),
        "ttft_ms_median": (lambda v: round(v * 1000, 1) if v else None)(_median([o.result.ttft_s for o in ph.outcomes])),
        "spec_decode": _spec(ph), "prompts": per_prompt,
        "length_unjudged": sum(o.length_unjudged for o in ph.outcomes),
        "rule_unjudged": sum(o.rule_unjudged for o in ph.outcomes),
    }


@dataclass
class Run:
    phases: list[dict] = field(default_factory=list)
    canary: list[dict] = field(default_factory=list)
    signals: list[Check] = field(default_factory=list)
    results: list[client.Result] = field(default_factory=list)   # every request sent, for the error lines
    answers: list[tuple[str, str, bool | None]] = field(default_factory=list)  # (prompt id, content, check) per stop


def run(mtp: Endpoint, prompts: list[Prompt], concurrencies: list[int], max_tokens: int, temperature: float,
        rule: bool, baseline: Endpoint | None = None, emit=print) -> Run:
    """Canary, then every (workload, concurrency) phase (MTP deployment first, then the baseline on the
    same requests) with a canary after each, then the model-based signals and a last canary."""
    by_id = {p.id: p for p in prompts}
    workloads = [w for w in WORKLOADS if any(p.workload == w for p in prompts)]
    bar = ProgressBar(len(prompts) * len(concurrencies) * (2 if baseline else 1))
    out = Run()
    out.canary.append(probes.canary_window(mtp, out.results))
    for workload in workloads:
        selected = [p for p in prompts if p.workload == workload]
        requests = mtp.fit_all([client.Request(p.id, p.prompt, max_tokens=max_tokens, temperature=temperature, seed=i)
                                for i, p in enumerate(selected)])
        for c in concurrencies:
            label = f"{workload} c={c}"
            ph = phase.measure(mtp.url, mtp.model, requests, c, rule=rule, timeout=mtp.timeouts,
                               on_done=lambda _r: bar.step(label), watch=mtp.watch,
                               max_model_len=mtp.info.max_model_len, deadline=mtp.deadline)
            out.results.extend(o.result for o in ph.outcomes)
            out.answers += [(o.result.request.id, o.result.content, check_answer(by_id[o.result.request.id], o.result.content))
                            for o in ph.outcomes if not o.result.error and not o.findings and o.result.finish_reason == "stop"]
            summary = {"workload": workload, "concurrency": c, **_phase_summary(ph, by_id, check_answers=not rule)}
            if baseline:
                base = phase.measure(baseline.url, baseline.model, baseline.fit_all(requests), c, rule=rule,
                                     timeout=baseline.timeouts, on_done=lambda _r: bar.step(label + " baseline"),
                                     watch=baseline.watch, max_model_len=baseline.info.max_model_len,
                                     deadline=baseline.deadline)
                out.results.extend(o.result for o in base.outcomes)
                b = _phase_summary(base, by_id, check_answers=not rule)
                summary["baseline"] = {k: b[k] for k in ("output_tokens_per_s", "request_tokens_per_s_median",
                                                         "tpot_ms_median", "classes", "spec_decode")}
                summary["speedup_output_tokens_per_s"] = round(summary["output_tokens_per_s"] / b["output_tokens_per_s"], 3) \
                    if b["output_tokens_per_s"] else None
                if b["tpot_ms_median"] and summary["tpot_ms_median"]:
                    summary["speedup_decode_tpot"] = round(b["tpot_ms_median"] / summary["tpot_ms_median"], 3)
            out.phases.append(summary)
            out.canary.append(probes.canary_window(mtp, out.results))
    out.signals = probes.run(mtp, baseline, prompts, max_tokens, temperature, concurrencies, rule, out.results)
    out.canary.append(probes.canary_window(mtp, out.results))
    out.signals += [signals.canary(out.canary), signals.collapse(out.canary)]
    return out


def answer_checks(answers: list[tuple[str, str, bool | None]], prompts: int) -> list[Check]:
    """A fluent but wrong, or constant, answer fails: accuracy over the finished, checkable answers,
    and no single answer text for most of the prompts."""
    texts: dict[str, set[str]] = {}
    for pid, content, _ in answers:
        texts.setdefault(" ".join(content.split()), set()).add(pid)
    checks = []
    if texts:
        text, pids = max(texts.items(), key=lambda kv: len(kv[1]))
        figures = {"prompts_with_that_answer": len(pids), "prompts": prompts, "threshold_share": CONSTANT_SHARE}
        if len(pids) >= 3 and len(pids) > CONSTANT_SHARE * prompts:
            checks.append(Check("constant-answer", FAIL, f"{text[:40]!r} answered {len(pids)} of {prompts} different "
                                                         "prompts", figures))
    judged = [ok for _, _, ok in answers if ok is not None]
    right = sum(judged)
    figures = {"correct": right, "judged": len(judged), "threshold": MIN_ACCURACY, "min_judged": MIN_JUDGED}
    if len(judged) < MIN_JUDGED:
        checks.append(Check("answers", CANNOT, f"only {len(judged)} checkable answers finished (finish_reason stop) "
                                               f"within max_tokens; needs {MIN_JUDGED}: raise --max-tokens", figures))
    else:
        share = right / len(judged)
        checks.append(Check("answers", PASS if share >= MIN_ACCURACY else FAIL,
                            f"{right}/{len(judged)} finished answers correct ({share:.0%}; needs >= {MIN_ACCURACY:.0%})",
                            figures))
    return checks


def concurrency_regressions(phases: list[dict]) -> list[dict]:
    """Prompts clean (not corrupted, not errored) at the lowest concurrency but corrupted at a higher one."""
    out = []
    for workload in dict.fromkeys(p["workload"] for p in phases):
        ps = sorted((p for p in phases if p["workload"] == workload), key=lambda p: p["concurrency"])
        low = ps[0]
        for high in ps[1:]:
            for pid, result in high["prompts"].items():
                before = low["prompts"].get(pid, {"class": "errored"})
                if result["class"] == "corrupted" and before["class"] not in ("corrupted", "errored"):
                    out.append({"prompt": pid, "workload": workload, "clean_at": low["concurrency"],
                                "corrupted_at": high["concurrency"], "symptoms": result["symptoms"]})
    return out


def threshold_checks(phases: list[dict], thresholds: dict, expect_mtp: bool = True) -> list[Check]:
    """Error rate, corrupted outputs and each workload's acceptance against the target's thresholds."""
    checks = []
    requests = sum(p["requests"] for p in phases)
    errors = sum(p["errors"] for p in phases)
    if requests and errors / requests > thresholds["max_error_rate"]:
        checks.append(Check("error-rate", FAIL, f"error rate {errors}/{requests} above {thresholds['max_error_rate']:.0%}",
                            {"errors": errors, "requests": requests}))
    else:
        checks.append(Check("error-rate", PASS, f"{errors}/{requests} requests errored", {"errors": errors, "requests": requests}))
    corrupted = [(p["workload"], p["concurrency"], pid, r["symptoms"]) for p in phases for pid, r in p["prompts"].items()
                 if r["class"] == "corrupted"]
    names = ", ".join(f"{pid} (c={c})" for _, c, pid, _ in corrupted[:12])
    status = FAIL if len(corrupted) > thresholds["max_corrupted"] else PASS
    checks.append(Check("corrupted-outputs", status,
                        f"{len(corrupted)} corrupted outputs{': ' + names if names else ''}{' ...' if len(corrupted) > 12 else ''}",
                        {"corrupted": len(corrupted), "allowed": thresholds["max_corrupted"]}))
    for workload in dict.fromkeys(p["workload"] for p in phases):
        ps = [p for p in phases if p["workload"] == workload]
        name = f"acceptance-{workload}"
        problems = [p["spec_decode"].get("problem") for p in ps if p["spec_decode"].get("drafts") is None]
        measured = [p["spec_decode"] for p in ps if p["spec_decode"].get("drafts") is not None]
        drafts = sum(s["drafts"] for s in measured)
        draft_tokens = sum(s["draft_tokens"] for s in measured)
        accepted = sum(s["accepted_tokens"] for s in measured)
        minimum = thresholds["min_acceptance"].get(workload)
        figures = {"drafts": drafts, "draft_tokens": draft_tokens, "accepted": accepted, "threshold": minimum,
                   "unmeasured_phases": len(problems)}
        answered = sum(p["requests"] - p["errors"] - p.get("not_judged", 0) for p in ps)
        if not answered:
            checks.append(Check(name, CANNOT, f"{workload}: no request succeeded, nothing to measure", figures))
        elif expect_mtp and measured and drafts == 0:
            checks.append(Check(name, FAIL, f"{workload}: MTP is not firing (no spec-decode drafts)", figures))
        elif expect_mtp and minimum is not None and draft_tokens and accepted / draft_tokens < minimum:
            checks.append(Check(name, FAIL, f"{workload}: acceptance {accepted / draft_tokens:.1%} below the threshold "
                                            f"{minimum:.0%}", figures))
        elif problems:
            checks.append(Check(name, CANNOT, f"{workload}: {len(problems)} of {len(ps)} phases unmeasurable "
                                              f"({', '.join(sorted(set(map(str, problems))))})", figures))
        elif draft_tokens:
            checks.append(Check(name, PASS, f"{workload}: acceptance {accepted / draft_tokens:.1%} "
                                            f"(threshold {_pct(minimum)})", figures))
        else:
            checks.append(Check(name, PASS if not expect_mtp else CANNOT, f"{workload}: no draft tokens measured", figures))
    return checks


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def judge(phases: list[dict], thresholds: dict, expect_mtp: bool = True) -> list[str]:
    """The failed thresholds, each one line (empty: the deployment passes the thresholds)."""
    return [c.detail for c in threshold_checks(phases, thresholds, expect_mtp) if c.status == FAIL]


def workload_acceptance(phases: list[dict]) -> dict:
    out = {}
    for workload in dict.fromkeys(p["workload"] for p in phases):
        ps = [p["spec_decode"] for p in phases if p["workload"] == workload and p["spec_decode"].get("drafts") is not None]
        draft_tokens = sum(s["draft_tokens"] for s in ps)
        drafts = sum(s["drafts"] for s in ps)
        accepted = sum(s["accepted_tokens"] for s in ps)
        out[workload] = {"acceptance_rate": accepted / draft_tokens if draft_tokens else None,
                         "mean_acceptance_length": 1 + accepted / drafts if drafts else None}
    return out


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
