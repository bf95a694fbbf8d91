"""One deployment under test: its address, what it serves, its /metrics watch, and how a request
is fitted into its context (max_tokens clamped so prompt + max_tokens <= max_model_len)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import client, metrics, server
from .transport import Deadline, Timeouts

# Fitting needs no /tokenize call when it obviously fits: a token covers at least one byte of the
# prompt, and a chat template adds far fewer than this many tokens around it.
TEMPLATE_ALLOWANCE = 64


@dataclass
class Endpoint:
    info: server.ServerInfo
    timeouts: Timeouts
    deadline: Deadline | None = None
    metrics_urls: tuple[str, ...] = ()   # where its spec-decode counters are read: the replicas behind a router
    watch: metrics.Watch = field(init=False)
    counter: server.PromptCounter = field(init=False)
    clamped: dict[str, tuple[int, int]] = field(default_factory=dict)   # request id -> (asked, allowed)
    unfit: dict[str, int] = field(default_factory=dict)                 # request id -> prompt tokens

    def __post_init__(self) -> None:
        self.watch = metrics.Watch(list(self.metrics_urls) or self.url, self.model, self.timeouts, self.deadline)
        self.counter = server.PromptCounter(self.url, self.model, self.timeouts, self.deadline)

    @property
    def url(self) -> str:
        return self.info.url

    @property
    def model(self) -> str:
        return self.info.model

    def fit(self, req: client.Request) -> client.Request | None:
        """The request with max_tokens clamped to the room its prompt leaves; None when the prompt
        alone fills max_model_len. Unchanged when the server states no max_model_len or cannot count."""
        limit = self.info.max_model_len
        if not limit or req.max_tokens + len(req.prompt.encode()) + TEMPLATE_ALLOWANCE <= limit:
            return req
        n = self.counter.count(req.kind, req.prompt)
        if n is None:
            return req
        room = limit - n
        if room < 1:
            self.unfit[req.id] = n
            return None
        if req.max_tokens > room:
            self.clamped[req.id] = (req.max_tokens, room)
            return replace(req, max_tokens=room)
        return req

    def fit_all(self, requests: list[client.Request]) -> list[client.Request]:
        return [r for r in map(self.fit, requests) if r is not None]
