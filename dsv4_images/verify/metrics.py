"""Speculative-decoding evidence from vLLM's Prometheus /metrics, measured over a window.

Counters (vLLM >= 0.10): vllm:spec_decode_num_drafts_total, ..._num_draft_tokens_total,
..._num_accepted_tokens_total and ..._num_accepted_tokens_per_pos_total{position="N"}.
Acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..errors import UserError

PREFIX = "vllm:spec_decode_"


@dataclass(frozen=True)
class SpecDecodeCounters:
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    accepted_per_position: dict[int, float] = field(default_factory=dict)

    def __sub__(self, earlier: "SpecDecodeCounters") -> "SpecDecodeCounters":
        positions = set(self.accepted_per_position) | set(earlier.accepted_per_position)
        return SpecDecodeCounters(
            self.drafts - earlier.drafts, self.draft_tokens - earlier.draft_tokens, self.accepted - earlier.accepted,
            {p: self.accepted_per_position.get(p, 0.0) - earlier.accepted_per_position.get(p, 0.0) for p in positions})

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.draft_tokens if self.draft_tokens else None

    @property
    def mean_acceptance_length(self) -> float | None:
        return 1 + self.accepted / self.drafts if self.drafts else None

    @property
    def per_position_acceptance(self) -> dict[int, float]:
        """Acceptance at draft position N: accepted at N / drafts (every draft proposes position 0..k-1)."""
        if not self.drafts:
            return {}
        return {p: n / self.drafts for p, n in sorted(self.accepted_per_position.items())}

    @property
    def fired(self) -> bool:
        return self.drafts > 0 and self.accepted > 0

    def as_dict(self) -> dict:
        return {"drafts": int(self.drafts), "draft_tokens": int(self.draft_tokens), "accepted_tokens": int(self.accepted),
                "acceptance_rate": self.acceptance_rate, "mean_acceptance_length": self.mean_acceptance_length,
                "per_position_acceptance": {str(p): r for p, r in self.per_position_acceptance.items()}}


def parse(text: str, model_name: str | None = None) -> SpecDecodeCounters:
    """Sum the spec-decode counters in a /metrics page (over engines; one model if named)."""
    totals = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted_tokens": 0.0}
    per_pos: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if model_name and sample.labels.get("model_name", model_name) != model_name:
                continue
            key = sample.name[len(PREFIX):-len("_total")]
            if key == "num_accepted_tokens_per_pos":
                pos = int(sample.labels["position"])
                per_pos[pos] = per_pos.get(pos, 0.0) + sample.value
            elif key in totals:
                totals[key] += sample.value
    return SpecDecodeCounters(totals["num_drafts"], totals["num_draft_tokens"], totals["num_accepted_tokens"], per_pos)


def scrape(base_url: str, model_name: str | None = None, timeout: float = 10) -> SpecDecodeCounters:
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/metrics", timeout=timeout) as response:
            return parse(response.read().decode(), model_name)
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot read {base_url.rstrip('/')}/metrics: {getattr(exc, 'reason', exc)}") from None
