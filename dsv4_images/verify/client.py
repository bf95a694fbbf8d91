"""A small OpenAI-compatible client for vLLM: completions and chat, streamed, at a chosen concurrency.

Streaming gives time to first token and time per output token; `return_token_ids` (a vLLM
extension) gives the generated token ids, which the tiny model's rule check needs.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable

from ..errors import UserError


@dataclass(frozen=True)
class Request:
    id: str
    prompt: str                       # the user message (chat) or the raw prompt (completion)
    kind: str = "chat"                # "chat" or "completion"
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Result:
    request: Request
    content: str = ""                 # the answer (chat: message content; completion: text)
    reasoning: str = ""               # chat reasoning_content, when the server separates it
    token_ids: list[int] = field(default_factory=list)
    prompt_last_token: int | None = None
    finish_reason: str | None = None
    completion_tokens: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        """Everything the model generated (reasoning and answer), for corruption checks."""
        return f"{self.reasoning}\n{self.content}" if self.reasoning else self.content

    @property
    def tokens_per_s(self) -> float | None:
        return self.completion_tokens / self.latency_s if self.latency_s > 0 and self.completion_tokens else None

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first one (decode speed)."""
        if self.ttft_s is None or self.completion_tokens < 2:
            return None
        return (self.latency_s - self.ttft_s) / (self.completion_tokens - 1)


def served_model(base_url: str, timeout: float = 10) -> str:
    """The first model id the server lists; one clear line when nothing answers."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/v1/models", timeout=timeout) as response:
            models = json.load(response)["data"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise UserError(f"no OpenAI-compatible server answers at {base_url} ({getattr(exc, 'reason', exc)})") from None
    if not models:
        raise UserError(f"{base_url} serves no model")
    return models[0]["id"]


def _body(model: str, req: Request) -> tuple[str, dict]:
    body = {"model": model, "max_tokens": req.max_tokens, "temperature": req.temperature, "return_token_ids": True,
            "stream": True, "stream_options": {"include_usage": True}, **req.extra}
    if req.seed is not None:
        body["seed"] = req.seed
    if req.kind == "chat":
        return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": req.prompt}]}
    return "/v1/completions", {**body, "prompt": req.prompt}


def _events(response):
    """The JSON payloads of a server-sent-events stream, up to [DONE]."""
    for raw in response:
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


def send(base_url: str, model: str, req: Request, timeout: float = 900) -> Result:
    path, body = _body(model, req)
    request = urllib.request.Request(f"{base_url.rstrip('/')}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    result = Result(req)
    content, reasoning = [], []
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            for event in _events(response):
                if event.get("prompt_token_ids"):
                    result.prompt_last_token = event["prompt_token_ids"][-1]
                if event.get("usage"):
                    result.completion_tokens = event["usage"].get("completion_tokens", 0)
                for choice in event.get("choices", []):
                    delta = choice.get("delta", {}) if req.kind == "chat" else {"content": choice.get("text")}
                    piece, thought = delta.get("content") or "", delta.get("reasoning_content") or delta.get("reasoning") or ""
                    ids = choice.get("token_ids") or []
                    if (piece or thought or ids) and result.ttft_s is None:
                        result.ttft_s = time.monotonic() - started
                    content.append(piece)
                    reasoning.append(thought)
                    result.token_ids.extend(ids)
                    if choice.get("prompt_token_ids"):
                        result.prompt_last_token = choice["prompt_token_ids"][-1]
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
    except urllib.error.HTTPError as exc:
        result.error = f"HTTP {exc.code}: {' '.join(exc.read()[:200].decode(errors='replace').split())}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    result.latency_s = time.monotonic() - started
    result.content, result.reasoning = "".join(content), "".join(reasoning)
    if not result.completion_tokens:
        result.completion_tokens = len(result.token_ids)
    return result


def run(base_url: str, model: str, requests: list[Request], concurrency: int, timeout: float = 900,
        on_done: Callable[[Result], None] | None = None) -> tuple[list[Result], float]:
    """Send every request with at most `concurrency` in flight; returns results (in order) and wall time."""
    started = time.monotonic()
    results: dict[int, Result] = {}
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(send, base_url, model, r, timeout): i for i, r in enumerate(requests)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done:
                on_done(results[futures[future]])
    return [results[i] for i in range(len(requests))], time.monotonic() - started
