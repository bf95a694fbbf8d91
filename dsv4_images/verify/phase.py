"""One measured phase: send a batch at a concurrency, diff the spec-decode counters around it,
and check every output for corruption."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import client, corruption, metrics


@dataclass
class Outcome:
    result: client.Result
    findings: list[corruption.Finding] = field(default_factory=list)

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


def check(result: client.Result, rule: bool, allowed_scripts: set[str] | None = None) -> list[corruption.Finding]:
    if result.error:
        return []
    findings = corruption.detect(result.text, prompt=result.request.prompt, finish_reason=result.finish_reason,
                                 completion_tokens=result.completion_tokens, max_tokens=result.request.max_tokens,
                                 allowed_scripts=allowed_scripts)
    if rule and result.prompt_last_token is not None:
        findings += corruption.rule_findings(result.prompt_last_token, result.token_ids)
    return findings


def measure(base_url: str, model: str, requests: list[client.Request], concurrency: int, rule: bool = False,
            timeout: float = 900, on_done=None) -> Phase:
    before = metrics.scrape(base_url, model)
    results, wall = client.run(base_url, model, requests, concurrency, timeout, on_done)
    after = metrics.scrape(base_url, model)
    return Phase(concurrency, wall, [Outcome(r, check(r, rule)) for r in results], after - before)
