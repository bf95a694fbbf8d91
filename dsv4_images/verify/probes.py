"""The requests behind the model-based signals (signals.py judges them).

A small greedy probe set (PROBE_PROMPTS prompts spread over the workloads, at most
PROBE_MAX_TOKENS tokens each) is sent streamed at c=1 (the reference), non-streamed at c=1,
streamed all at once at c>=2, to the baseline when there is one, and once more with logprobs at
the run's temperature. The draft-health canary is one greedy completion of a repeated sentence,
measured alone between two /metrics scrapes; it is sent at the start, after every phase and at
the end, and those windows feed the collapse detector.
"""

from __future__ import annotations

from . import client, phase, signals
from .checks import SKIPPED, Check
from .endpoint import Endpoint
from .prompts import Prompt

PROBE_PROMPTS = 8
PROBE_MAX_TOKENS = 256
CANARY_PROMPT = "The quick brown fox jumps over the lazy dog.\n" * 6
CANARY_MAX_TOKENS = 256


def probe_requests(prompts: list[Prompt], max_tokens: int) -> list[client.Request]:
    """Up to PROBE_PROMPTS prompts, taken in turn from each workload, greedy."""
    by_workload: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_workload.setdefault(p.workload, []).append(p)
    chosen: list[Prompt] = []
    while len(chosen) < PROBE_PROMPTS and any(by_workload.values()):
        for queue in by_workload.values():
            if queue and len(chosen) < PROBE_PROMPTS:
                chosen.append(queue.pop(0))
    return [client.Request(f"probe-{p.id}", p.prompt, max_tokens=min(max_tokens, PROBE_MAX_TOKENS)) for p in chosen]


def canary_window(ep: Endpoint, collected: list[client.Result]) -> dict:
    """One canary request between two scrapes: its acceptance, drafts, or why it has none."""
    req = ep.fit(client.Request("canary", CANARY_PROMPT, kind="completion", max_tokens=CANARY_MAX_TOKENS))
    if req is None:
        return {"acceptance": None, "error": "the canary prompt does not fit max_model_len"}
    before = ep.watch.scrape()
    result = client.send(ep.url, ep.model, req, ep.timeouts, ep.deadline)
    after = ep.watch.scrape()
    collected.append(result)
    if result.error:
        return {"acceptance": None, "error": f"{result.error_kind}: {result.error[:80]}"}
    window = ep.watch.window(before, after)
    if window.delta is None:
        return {"acceptance": None, "problem": window.problem, "detail": window.detail[:100]}
    d = window.delta
    return {"acceptance": d.acceptance_rate, "drafts": int(d.drafts), "accepted": int(d.accepted),
            "tokens": result.completion_tokens}


def _send(ep: Endpoint, reqs: list[client.Request], concurrency: int, collected: list[client.Result]) -> list[client.Result]:
    results, _ = client.run(ep.url, ep.model, reqs, concurrency, ep.timeouts, deadline=ep.deadline)
    collected.extend(results)
    return results


def run(mtp: Endpoint, baseline: Endpoint | None, prompts: list[Prompt], max_tokens: int, temperature: float,
        levels: list[int], rule: bool, collected: list[client.Result]) -> list[Check]:
    """Every model-based signal but the canary's: baseline, stream, concurrency, logprobs."""
    reqs = mtp.fit_all(probe_requests(prompts, max_tokens))
    single = _send(mtp, reqs, 1, collected)
    checks = []
    if baseline is not None:
        before = baseline.watch.scrape()
        off = _send(baseline, reqs, 1, collected)
        window = baseline.watch.window(before, baseline.watch.scrape())
        off_drafts = window.delta.drafts if window.delta is not None else None
        checks.append(signals.baseline(single, off, off_drafts))
    else:
        checks.append(Check("baseline-identical", SKIPPED,
                            "no --baseline-url (the same model served with NUM_SPECULATIVE_TOKENS=0)"))
    whole = _send(mtp, [client.Request(r.id, r.prompt, r.kind, r.max_tokens, stream=False) for r in reqs], 1, collected)
    checks.append(signals.stream_vs_whole(single, whole))
    level = max(2, *levels)
    batched = _send(mtp, reqs, level, collected)
    alone = {r.request.id: phase.judge(r, rule, mtp.info.max_model_len) for r in single}
    together = [phase.judge(r, rule, mtp.info.max_model_len) for r in batched]
    only_batched = [o.result.request.id for o in together
                    if o.corrupted and not alone[o.result.request.id].corrupted and not alone[o.result.request.id].result.error]
    checks.append(signals.concurrency(single, batched, level, only_batched))
    lp_reqs = [client.Request(r.id, r.prompt, r.kind, r.max_tokens, temperature, seed=i, logprobs=True)
               for i, r in enumerate(reqs)]
    before = mtp.watch.scrape()
    scored = _send(mtp, lp_reqs, 1, collected)
    window = mtp.watch.window(before, mtp.watch.scrape())
    checks.append(signals.logprobs(scored, temperature == 0, window.delta.drafts if window.delta is not None else None))
    return checks
