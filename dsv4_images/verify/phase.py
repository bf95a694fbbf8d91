"""One measured phase: send a batch at a concurrency, diff the spec-decode counters around it,
and check every output for corruption.

A `length` stop is judged against what the server allows: when the prompt plus the output fill
the served model's max_model_len, the stop is "context-limited" (the server's own limit), not a
cut-off; when the server does not say its max_model_len, such a stop cannot be judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError
from . import client, corruption, metrics
from .transport import Deadline, Timeouts

# A speculative request may stop a few tokens short of max_model_len (room for the k drafts and the
# bonus token); a length stop within this many tokens of the limit is the server's limit.
CONTEXT_SLACK = 16


@dataclass
class Outcome:
    result: client.Result
    findings: list[corruption.Finding] = field(default_factory=list)
    context_limited: bool = False     # stopped by max_model_len before max_tokens
    length_unjudged: bool = False     # a length stop short of max_tokens, and no max_model_len to explain it
    rule_unjudged: bool = False       # the tiny model's rule was due but the prompt's token ids were missing

    @property
    def corrupted(self) -> bool:
        return bool(self.findings)

    @property
    def rule_violations(self) -> int:
        """Tokens breaking the tiny model's rule (0 when the rule was not checked)."""
        for f in self.findings:
            if f.symptom == "rule":
                return int(f.detail.split("/", 1)[0])
        return 0


@dataclass
class Phase:
    concurrency: int
    wall_s: float
    outcomes: list[Outcome]
    spec: metrics.SpecDecodeCounters
    window: metrics.Window = field(default_factory=lambda: metrics.Window(None, "metrics-unreadable", "not measured"))

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.result.error)

    @property
    def corrupted(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.corrupted]

    @property
    def output_tokens(self) -> int:
        return sum(o.result.completion_tokens for o in self.outcomes)

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def generated_tokens(self) -> int:
        return sum(len(o.result.token_ids) for o in self.outcomes)

    @property
    def rule_violations(self) -> int:
        return sum(o.rule_violations for o in self.outcomes)


def judge(result: client.Result, rule: bool, max_model_len: int | None = None,
          allowed_scripts: set[str] | None = None) -> Outcome:
    """Every symptom in one result, with its length stop explained (or marked unexplained)."""
    out = Outcome(result)
    if result.error:
        return out
    limit: int | None = result.request.max_tokens
    if result.finish_reason == "length":
        known = bool(max_model_len) and result.prompt_tokens is not None
        if known and result.prompt_tokens + result.completion_tokens >= max_model_len - CONTEXT_SLACK:
            out.context_limited, limit = True, result.completion_tokens
        elif not known and result.completion_tokens < limit:
            out.length_unjudged, limit = True, None
    # A length stop the context explains, or one that cannot be judged (no max_model_len stated: the
    # `context` check says so), is not blamed on the text: the detectors do not judge its ending.
    out.findings = corruption.detect(result.text, prompt=result.request.prompt, finish_reason=result.finish_reason,
                                     completion_tokens=result.completion_tokens, max_tokens=limit,
                                     allowed_scripts=allowed_scripts,
                                     context_limited=(out.context_limited or out.length_unjudged) or None)
    if rule:
        if result.prompt_last_token is None:
            out.rule_unjudged = True
        else:
            out.findings += corruption.rule_findings(result.prompt_last_token, result.token_ids)
    return out


def check(result: client.Result, rule: bool, allowed_scripts: set[str] | None = None) -> list[corruption.Finding]:
    return judge(result, rule, allowed_scripts=allowed_scripts).findings


def measure(base_url: str, model: str, requests: list[client.Request], concurrency: int, rule: bool = False,
            timeout: float | Timeouts = 900, on_done=None, *, watch: metrics.Watch | None = None,
            max_model_len: int | None = None, deadline: Deadline | None = None) -> Phase:
    """Send the batch between two /metrics scrapes. Without a `watch` (tests, the demo), unreadable
    metrics are a UserError; with one, they are recorded in the phase's window."""
    timeouts = timeout if isinstance(timeout, Timeouts) else Timeouts(request=float(timeout))
    own = watch is None
    watch = watch or metrics.Watch(base_url, model, timeouts, deadline)
    before = watch.scrape()
    results, wall = client.run(base_url, model, requests, concurrency, timeouts, on_done, deadline)
    after = watch.scrape()
    window = watch.window(before, after)
    if own and window.delta is None:
        raise UserError(f"cannot measure speculative decoding at {base_url.rstrip('/')}/metrics: "
                        f"{window.problem}: {window.detail}")
    outcomes = [judge(r, rule, max_model_len) for r in results]
    return Phase(concurrency, wall, outcomes, window.delta or metrics.SpecDecodeCounters(), window)
