"""Model-based signals: judgements that need no hand-written rule about what corruption looks like.

Each function turns probe results (probes.py sends them) into one named Check. The thresholds,
and why they sit where they do:

- IDENTICAL_SHARE 0.8: speculative decoding is lossless, so greedy outputs with and without MTP
  (and streamed or not, and at c=1 or in a batch) should be identical; batch-dependent numerics can
  flip a near-tie and send a greedy output down another path. vLLM's own MTP correctness test
  accepts more than 80% identical prompts; we use the same bar for every greedy comparison.
- UNLIKELY_LOGPROB ln(1e-4) and UNLIKELY_RUN 3: a correct sampler at temperature <= 1 emits a token
  the model itself gives less than 1e-4 only where its distribution is nearly flat; three such
  tokens in a row do not happen in fluent text, while a drafted token accepted by mistake, or a
  sampler reading garbage parameters, produces exactly that (the tiny model's wrong tokens sit
  near ln(1e-11)). This holds even when the text reads fine.
- ARGMAX_TOLERANCE 0.05 nats: at temperature 0 every emitted token must be the target model's own
  top token at that step (greedy verification accepts a draft only when it equals the argmax);
  0.05 nats (5% in probability) absorbs rounding of near-ties, a wrongly accepted draft is
  normally whole nats below the top.
- CANARY_MIN 0.80: a prompt that repeats one sentence is the easiest text a drafter will ever see;
  a working MTP head reaches 0.9-1.0 on it (the cpu target's tiny model, built for ~0.9 on any
  text, included), while a head loaded wrong (another quant format, a half-loaded DSpark
  drafter) sits near 0. 0.80 leaves room for the first repetition, which no drafter can know.
- COLLAPSE_DROP 0.20: the canary is the same greedy request every time, so its acceptance can only
  move by batch numerics (a few points); a window more than 20 points under an earlier one means
  the drafter degraded between requests (vllm#36872: acceptance collapsing until a restart).
"""

from __future__ import annotations

import difflib
import math

from .checks import CANNOT, FAIL, PASS, SKIPPED, Check
from .client import Result

IDENTICAL_SHARE = 0.8
UNLIKELY_LOGPROB = math.log(1e-4)
UNLIKELY_RUN = 3
ARGMAX_TOLERANCE = 0.05
CANARY_MIN = 0.80
COLLAPSE_DROP = 0.20


def _sequence(a: Result, b: Result) -> tuple[list, list, str]:
    if a.token_ids and b.token_ids:
        return a.token_ids, b.token_ids, "tokens"
    return a.text.split(), b.text.split(), "words"


def divergence(a: Result, b: Result) -> dict:
    """Where two greedy outputs of one prompt part, and how much of the longer one lies after it."""
    x, y, unit = _sequence(a, b)
    common = 0
    for u, v in zip(x, y):
        if u != v:
            break
        common += 1
    identical = x == y and a.text == b.text
    longest = max(len(x), len(y)) or 1
    return {"identical": identical, "first_divergence": None if identical else common, "unit": unit,
            "divergence_rate": 0.0 if identical else round(1 - common / longest, 3), "length": max(len(x), len(y))}


def _pairs(a: list[Result], b: list[Result]) -> tuple[list[tuple[Result, Result]], list[str]]:
    judged, unjudged = [], []
    for x, y in zip(a, b):
        if x.error or y.error:
            unjudged.append(x.request.id)
        else:
            judged.append((x, y))
    return judged, unjudged


def _identical_check(name: str, what: str, a: list[Result], b: list[Result], extra_fail: list[str] = ()) -> Check:
    pairs, unjudged = _pairs(a, b)
    if not pairs:
        return Check(name, CANNOT, f"no prompt answered on both sides ({len(unjudged)} errored)", {"errored": unjudged})
    per_prompt = {x.request.id: divergence(x, y) for x, y in pairs}
    same = sum(1 for d in per_prompt.values() if d["identical"])
    share = same / len(pairs)
    figures = {"identical": same, "compared": len(pairs), "identical_share": round(share, 3),
               "threshold": f"> {IDENTICAL_SHARE:.0%}", "prompts": per_prompt, "errored": unjudged}
    diverged = [f"{pid} at {d['unit'][:-1]} {d['first_divergence']}" for pid, d in per_prompt.items() if not d["identical"]]
    text = f"{same}/{len(pairs)} identical {what} ({share:.0%}; needs > {IDENTICAL_SHARE:.0%})"
    if diverged:
        text += f"; diverged: {', '.join(diverged[:4])}{' ...' if len(diverged) > 4 else ''}"
    if extra_fail:
        return Check(name, FAIL, f"{'; '.join(extra_fail)}; {text}", figures)
    if share <= IDENTICAL_SHARE:
        return Check(name, FAIL, text, figures)
    if unjudged:
        return Check(name, CANNOT, f"{text}; {len(unjudged)} prompts errored: {', '.join(unjudged[:4])}", figures)
    return Check(name, PASS, text, figures)


def baseline(on: list[Result], off: list[Result], off_drafts: float | None) -> Check:
    """Greedy MTP-on against the MTP-off deployment (--baseline-url)."""
    if off_drafts:
        return Check("baseline-identical", CANNOT, f"the baseline ran speculative decoding ({off_drafts:g} drafts): "
                                                   "serve it with NUM_SPECULATIVE_TOKENS=0", {"baseline_drafts": off_drafts})
    check = _identical_check("baseline-identical", "greedy outputs with MTP on and off", on, off)
    if off_drafts is None and check.status == PASS:
        check.detail += " (the baseline's /metrics could not confirm MTP is off there)"
    return check


def dropped_words(streamed: str, whole: str) -> list[str]:
    """Words of the non-streamed answer missing from the streamed one, when that is the only difference."""
    a, b = whole.split(), streamed.split()
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops or any(op[0] != "delete" for op in ops):
        return []
    return [w for op in ops for w in a[op[1]:op[2]]]


def stream_vs_whole(streamed: list[Result], whole: list[Result]) -> Check:
    """The same greedy prompt streamed and not: words dropped only when streaming is vllm#52469."""
    problems = []
    for s, w in zip(streamed, whole):
        if s.error or w.error:
            continue
        if s.token_ids and s.token_ids == w.token_ids and s.text != w.text:
            lost = dropped_words(s.text, w.text)
            problems.append(f"{s.request.id}: same tokens, streamed text differs"
                            + (f" (dropped {' '.join(lost)[:40]!r})" if lost else ""))
        elif (lost := dropped_words(s.text, w.text)):
            problems.append(f"{s.request.id}: streaming dropped {len(lost)} words, e.g. {' '.join(lost)[:40]!r}")
    return _identical_check("stream-vs-nonstream", "streamed and non-streamed greedy outputs", streamed, whole, problems)


def concurrency(single: list[Result], batched: list[Result], level: int, corrupted_only_batched: list[str]) -> Check:
    """The same greedy prompts alone (c=1) and together (c=level)."""
    extra = [f"corrupted only at c={level}: {', '.join(corrupted_only_batched[:6])}"] if corrupted_only_batched else []
    check = _identical_check("concurrency-identical", f"greedy outputs at c=1 and c={level}", single, batched, extra)
    check.figures["level"] = level
    return check


def logprob_runs(logprobs: list[tuple[float, float | None]], greedy: bool) -> dict:
    longest = run = 0
    not_argmax = 0
    for lp, top in logprobs:
        run = run + 1 if lp < UNLIKELY_LOGPROB else 0
        longest = max(longest, run)
        if greedy and top is not None and lp < top - ARGMAX_TOLERANCE:
            not_argmax += 1
    return {"tokens": len(logprobs), "longest_unlikely_run": longest, "not_argmax": not_argmax,
            "min_logprob": round(max(min((lp for lp, _ in logprobs), default=0.0), -1e9), 3)}   # -inf is no JSON


def logprobs(results: list[Result], greedy: bool, drafts: float | None) -> Check:
    """The server's own logprobs of what it emitted."""
    name = "logprobs"
    answered = [r for r in results if not r.error]
    if not answered:
        kinds = {r.error_kind for r in results}
        if kinds == {"http-status"} and all(r.error.startswith("HTTP 4") for r in results):
            return Check(name, SKIPPED, f"the server refuses logprobs requests ({results[0].error[:80]})")
        return Check(name, CANNOT, f"every logprobs request failed: {results[0].error_kind}: {results[0].error[:80]}")
    broken = [f"{r.request.id}: {r.logprobs_problem}" for r in answered if r.logprobs_problem]
    if broken:
        return Check(name, CANNOT, f"malformed logprobs: {'; '.join(broken[:3])}")
    if all(r.logprobs is None for r in answered):
        return Check(name, SKIPPED, "the server returned no logprobs (not offered)")
    per_prompt = {r.request.id: logprob_runs(r.logprobs or [], greedy) for r in answered}
    figures = {"threshold_logprob": round(UNLIKELY_LOGPROB, 2), "threshold_run": UNLIKELY_RUN, "greedy": greedy,
               "argmax_tolerance": ARGMAX_TOLERANCE if greedy else None, "drafts_during_probe": drafts,
               "prompts": per_prompt}
    runs = [f"{pid} ({d['longest_unlikely_run']} in a row)" for pid, d in per_prompt.items()
            if d["longest_unlikely_run"] >= UNLIKELY_RUN]
    argmax = [f"{pid} ({d['not_argmax']} tokens)" for pid, d in per_prompt.items() if d["not_argmax"]]
    note = "" if drafts else " (MTP did not draft on these requests: the target model alone was checked)"
    tokens = sum(d["tokens"] for d in per_prompt.values())
    if runs or argmax:
        parts = []
        if runs:
            parts.append(f"runs of >= {UNLIKELY_RUN} tokens under p=1e-4: {', '.join(runs[:4])}")
        if argmax:
            parts.append(f"greedy tokens that are not the model's top token: {', '.join(argmax[:4])}")
        return Check(name, FAIL, "; ".join(parts) + note, figures)
    errored = len(results) - len(answered)
    status = CANNOT if errored else PASS
    return Check(name, status, f"{tokens} tokens over {len(answered)} prompts: no run of {UNLIKELY_RUN} under p=1e-4"
                               f"{', every greedy token the top token' if greedy else ''}"
                               f"{f'; {errored} requests errored' if errored else ''}{note}", figures)


def canary(windows: list[dict]) -> Check:
    """The first canary window: a repeated sentence must reach near-full acceptance."""
    name = "draft-canary"
    if not windows:
        return Check(name, CANNOT, "the canary was not run")
    first = windows[0]
    figures = {"threshold": CANARY_MIN, **first}
    if first.get("error"):
        return Check(name, CANNOT, f"the canary request failed: {first['error']}", figures)
    if first.get("acceptance") is None and first.get("problem"):
        return Check(name, CANNOT, f"acceptance unmeasurable: {first['problem']}: {first.get('detail', '')}", figures)
    if not first.get("drafts"):
        return Check(name, FAIL, "MTP proposed no drafts on the canary", figures)
    acc = first["acceptance"]
    text = f"acceptance {acc:.1%} on a repeated sentence ({first['drafts']} drafts); needs >= {CANARY_MIN:.0%}"
    return Check(name, PASS if acc >= CANARY_MIN else FAIL, text, figures)


def collapse(windows: list[dict]) -> Check:
    """The canary's acceptance window after window, from the start of the run to its end."""
    name = "acceptance-collapse"
    series = [w.get("acceptance") for w in windows]
    valid = [(i, a) for i, a in enumerate(series) if a is not None]
    figures = {"windows": series, "drop_threshold": COLLAPSE_DROP}
    if len(valid) < 2:
        reasons = sorted({w.get("problem") or w.get("error") or "no drafts" for w in windows if w.get("acceptance") is None})
        return Check(name, CANNOT, f"{len(valid)} of {len(windows)} canary windows measurable ({'; '.join(reasons)[:100]})",
                     figures)
    best, drops = valid[0][1], []
    for i, a in valid[1:]:
        if a < best - COLLAPSE_DROP:
            drops.append((i, best, a))
        best = max(best, a)
    trail = " -> ".join(f"{a:.0%}" if a is not None else "?" for a in series)
    if drops:
        i, was, now = drops[0]
        return Check(name, FAIL, f"acceptance fell from {was:.0%} to {now:.0%} at window {i} of {len(series)} "
                                 f"(same canary each time): {trail}", figures)
    missing = len(series) - len(valid)
    return Check(name, CANNOT if missing else PASS,
                 f"{len(series)} windows: {trail}{f'; {missing} unmeasurable' if missing else ''}", figures)
