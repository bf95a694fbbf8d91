"""Speculative-decoding evidence from vLLM's Prometheus /metrics, measured over windows.

Counters (vLLM >= 0.10): vllm:spec_decode_num_drafts_total, ..._num_draft_tokens_total,
..._num_accepted_tokens_total and ..._num_accepted_tokens_per_pos_total{position="N"}.
Acceptance rate = accepted / draft tokens; mean acceptance length = 1 + accepted / drafts.

A Watch keeps every scrape of one server in order, so a window (the difference of two scrapes)
is only trusted when both scrapes were readable and no counter went down (a restart, or several
servers behind one URL). Problems are named (PROBLEMS) and never raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from . import transport
from .transport import Deadline, HTTPFailure, Timeouts

PREFIX = "vllm:spec_decode_"
PROBLEMS = {
    "metrics-unreadable": "GET /metrics failed (connection, HTTP status or timeout)",
    "metrics-not-utf8": "the /metrics body is not UTF-8",
    "metrics-not-prometheus": "the /metrics body is not Prometheus text",
    "metrics-not-finite": "a spec-decode counter reads NaN, infinity or a negative number",
    "counters-decreased": "a spec-decode counter went down between two scrapes (restart, or several servers behind one URL)",
    "metrics-inconsistent": "a window's counters contradict each other (more accepted than drafted)",
}


class MetricsProblem(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


@dataclass(frozen=True)
class SpecDecodeCounters:
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    accepted_per_position: dict[int, float] = field(default_factory=dict)
    present: bool = False             # the page carried vllm:spec_decode_* counters at all

    def __sub__(self, earlier: "SpecDecodeCounters") -> "SpecDecodeCounters":
        positions = set(self.accepted_per_position) | set(earlier.accepted_per_position)
        return SpecDecodeCounters(
            self.drafts - earlier.drafts, self.draft_tokens - earlier.draft_tokens, self.accepted - earlier.accepted,
            {p: self.accepted_per_position.get(p, 0.0) - earlier.accepted_per_position.get(p, 0.0) for p in positions},
            self.present and earlier.present)

    def __add__(self, other: "SpecDecodeCounters") -> "SpecDecodeCounters":
        """Two servers' counters together (the replicas behind one router)."""
        positions = set(self.accepted_per_position) | set(other.accepted_per_position)
        return SpecDecodeCounters(
            self.drafts + other.drafts, self.draft_tokens + other.draft_tokens, self.accepted + other.accepted,
            {p: self.accepted_per_position.get(p, 0.0) + other.accepted_per_position.get(p, 0.0) for p in positions},
            self.present and other.present)

    def named(self) -> dict[str, float]:
        out = {"num_drafts": self.drafts, "num_draft_tokens": self.draft_tokens, "num_accepted_tokens": self.accepted}
        out |= {f'num_accepted_tokens_per_pos{{position="{p}"}}': v for p, v in self.accepted_per_position.items()}
        return out

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
    """Sum the spec-decode counters in a /metrics page (over engines; one model if named).
    Raises MetricsProblem when the page is not Prometheus text."""
    totals = {"num_drafts": 0.0, "num_draft_tokens": 0.0, "num_accepted_tokens": 0.0}
    per_pos: dict[int, float] = {}
    present = False
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise MetricsProblem("metrics-not-prometheus", f"{type(exc).__name__}: {' '.join(str(exc).split())[:100]}") from None
    for family in families:
        if not family.name.startswith(PREFIX):
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            if model_name and sample.labels.get("model_name", model_name) != model_name:
                continue
            key = sample.name[len(PREFIX):-len("_total")]
            if not math.isfinite(sample.value) or sample.value < 0:
                raise MetricsProblem("metrics-not-finite", f"{sample.name}{sample.labels} reads {sample.value}")
            if key == "num_accepted_tokens_per_pos":
                try:
                    pos = int(sample.labels["position"])
                except (KeyError, ValueError):
                    raise MetricsProblem("metrics-not-prometheus", f"{sample.name} with labels {sample.labels} has "
                                                                   "no integer position") from None
                per_pos[pos] = per_pos.get(pos, 0.0) + sample.value
                present = True
            elif key in totals:
                totals[key] += sample.value
                present = True
    return SpecDecodeCounters(totals["num_drafts"], totals["num_draft_tokens"], totals["num_accepted_tokens"], per_pos,
                              present)


@dataclass(frozen=True)
class Scrape:
    counters: SpecDecodeCounters | None     # None when the page could not be read or parsed
    problem: str | None = None
    detail: str = ""


def read(base_url: str, model_name: str | None, timeouts: Timeouts, run: Deadline | None = None) -> Scrape:
    """One /metrics scrape; never raises."""
    try:
        body = transport.get(base_url, "/metrics", timeouts, run)
    except HTTPFailure as exc:
        return Scrape(None, "metrics-unreadable", f"{exc.kind}: {exc.detail}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Scrape(None, "metrics-not-utf8", f"byte {exc.start}: {body[exc.start:exc.start + 8]!r}")
    try:
        return Scrape(parse(text, model_name))
    except MetricsProblem as exc:
        return Scrape(None, exc.kind, exc.detail)


def read_all(urls: list[str], model_name: str | None, timeouts: Timeouts, run: Deadline | None = None) -> Scrape:
    """One scrape of every server (the replicas behind a router), summed; the first unreadable one names itself."""
    scrapes = [read(url, model_name, timeouts, run) for url in urls]
    for url, s in zip(urls, scrapes):
        if s.counters is None:
            return Scrape(None, s.problem, f"{url}: {s.detail}" if len(urls) > 1 else s.detail)
    total = scrapes[0].counters
    for s in scrapes[1:]:
        total = total + s.counters
    return Scrape(total)


def decreased(earlier: SpecDecodeCounters, later: SpecDecodeCounters) -> str | None:
    """The first counter that went down from one scrape to the next, as 'name a -> b'."""
    before, after = earlier.named(), later.named()
    for name, value in before.items():
        if after.get(name, 0.0) < value:
            return f"vllm:spec_decode_{name} {value:g} -> {after.get(name, 0.0):g}"
    return None


@dataclass(frozen=True)
class Window:
    delta: SpecDecodeCounters | None
    problem: str | None = None
    detail: str = ""


class Watch:
    """Every /metrics scrape of one deployment during a run, in order: the server itself, or the replicas
    behind a router (`urls`), whose counters are summed per scrape."""

    def __init__(self, urls: str | list[str], model: str | None, timeouts: Timeouts, run: Deadline | None = None):
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.model, self.timeouts, self.run = model, timeouts, run
        self.scrapes: list[Scrape] = []
        self.decreases: list[str] = []
        self._last: SpecDecodeCounters | None = None

    def scrape(self) -> Scrape:
        s = read_all(self.urls, self.model, self.timeouts, self.run)
        self.scrapes.append(s)
        if s.counters is not None:
            if self._last is not None:
                down = decreased(self._last, s.counters)
                if down:
                    self.decreases.append(down)
            self._last = s.counters
        return s

    @staticmethod
    def window(before: Scrape, after: Scrape) -> Window:
        for s in (before, after):
            if s.counters is None:
                return Window(None, s.problem, s.detail)
        down = decreased(before.counters, after.counters)
        if down:
            return Window(None, "counters-decreased", down)
        d = after.counters - before.counters
        if d.accepted > d.draft_tokens or d.draft_tokens < d.drafts or any(v > d.drafts for v in d.accepted_per_position.values()):
            return Window(None, "metrics-inconsistent", f"drafts {d.drafts:g}, draft tokens {d.draft_tokens:g}, "
                                                        f"accepted {d.accepted:g}, per position {d.per_position_acceptance}")
        return Window(d)

    def problems(self) -> dict[str, tuple[int, str]]:
        """kind -> (how many scrapes, the first detail), for the unreadable scrapes."""
        out: dict[str, tuple[int, str]] = {}
        for s in self.scrapes:
            if s.problem:
                n, detail = out.get(s.problem, (0, s.detail))
                out[s.problem] = (n + 1, detail)
        return out

    @property
    def readable(self) -> list[SpecDecodeCounters]:
        return [s.counters for s in self.scrapes if s.counters is not None]
