"""A small OpenAI-compatible client for vLLM: completions and chat, streamed or not, at a chosen
concurrency, that never raises on what a server sends.

Streaming gives time to first token and time per output token; `return_token_ids` (a vLLM
extension) gives the generated token ids, which the tiny model's rule check needs. Every way a
response can be unusable is a named `error_kind` on the Result (transport.KINDS and STREAM_KINDS).
"""

from __future__ import annotations

import json
import math
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import transport
from .transport import Deadline, HTTPFailure, Timeouts

STREAM_KINDS = {
    "stream-no-done": "the event stream ended without `data: [DONE]`",
    "not-event-stream": "a streamed request answered 200 with something other than text/event-stream",
    "event-not-json": "an event's data is not JSON",
    "event-not-object": "an event's data is JSON but not an object",
    "event-malformed": "an event or body whose choices, delta, text or token ids are missing, null or of the wrong type",
    "event-error": "the server sent an error object instead of a completion",
    "not-json": "a non-streamed body that is not JSON",
    "verify-internal": "verify itself failed on this response (a bug in verify; the detail names where)",
}


# Failures that say nothing about the deployment's answers: the run ran out of time, or verify
# itself failed on a response. They make a run "cannot judge", never a server's error.
NOT_THE_SERVERS = ("timeout-run", "verify-internal")


@dataclass(frozen=True)
class Request:
    id: str
    prompt: str                       # the user message (chat) or the raw prompt (completion)
    kind: str = "chat"                # "chat" or "completion"
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int | None = None
    extra: dict = field(default_factory=dict)
    stream: bool = True
    logprobs: bool = False            # ask for each token's logprob and the top-1 alternative


@dataclass
class Result:
    request: Request
    content: str = ""                 # the answer (chat: message content; completion: text)
    reasoning: str = ""               # chat reasoning_content, when the server separates it
    token_ids: list[int] = field(default_factory=list)
    prompt_last_token: int | None = None
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    completion_tokens: int = 0
    latency_s: float = 0.0
    ttft_s: float | None = None
    error: str | None = None
    error_kind: str | None = None
    logprobs: list[tuple[float, float | None]] | None = None   # (token logprob, best logprob at that step)
    logprobs_problem: str | None = None
    # chat tool calls, in order: {"name", "arguments" (the string the server sent), "id"}; streamed
    # deltas are merged by their index, as OpenAI clients do
    tool_calls: list[dict] = field(default_factory=list)

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


class Malformed(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _body(model: str, req: Request) -> tuple[str, dict]:
    body = {"model": model, "max_tokens": req.max_tokens, "temperature": req.temperature, "return_token_ids": True,
            "stream": req.stream, **req.extra}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.seed is not None:
        body["seed"] = req.seed
    if req.kind == "chat":
        if req.logprobs:
            body |= {"logprobs": True, "top_logprobs": 1}
        return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": req.prompt}]}
    if req.logprobs:
        body["logprobs"] = 1
    return "/v1/completions", {**body, "prompt": req.prompt}


def _ints(value, what: str) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise Malformed("event-malformed", f"{what} is not a list of integers: {str(value)[:60]!r}")
    return value


def _str(value, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed("event-malformed", f"{what} is {type(value).__name__}, not a string")
    return value


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _logprob(value, where: str) -> float:
    """A log probability: a number <= 0 (-inf allowed: a token the model ruled out); raises ValueError."""
    lp = _number(value)
    if lp is None or math.isnan(lp) or lp > 1e-3:
        raise ValueError(f"{where} has logprob {value!r}, not a number <= 0")
    return lp


def _logprobs(value, kind: str) -> list[tuple[float, float | None]]:
    """(logprob, best logprob) per token from a chat or completion `logprobs` object; raises ValueError."""
    out = []
    if kind == "chat":
        for i, entry in enumerate(value.get("content") or []):
            lp = _logprob(entry.get("logprob"), f"token {i}")
            tops = [_logprob(t.get("logprob"), f"token {i}'s top_logprobs") for t in entry.get("top_logprobs") or []
                    if isinstance(t, dict)]
            out.append((lp, max(tops) if tops else None))
        return out
    tops_list = value.get("top_logprobs") or []
    for i, lp in enumerate(value.get("token_logprobs") or []):
        lp = _logprob(lp, f"token {i}")
        top = tops_list[i] if i < len(tops_list) and isinstance(tops_list[i], dict) else {}
        tops = [_logprob(t, f"token {i}'s top_logprobs") for t in top.values()]
        out.append((lp, max(tops) if tops else None))
    return out


class _Collector:
    """Accumulates the choices of streamed events (or one non-streamed body) into a Result."""

    def __init__(self, result: Result, started: float):
        self.result, self.started = result, started
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict] = {}

    def prompt_ids(self, value, where: str) -> None:
        ids = _ints(value, where)
        if ids:
            self.result.prompt_last_token = ids[-1]
            self.result.prompt_tokens = len(ids)

    def event(self, event, streamed: bool = True) -> None:
        if not isinstance(event, dict):
            raise Malformed("event-not-object", f"an event is {type(event).__name__}: {json.dumps(event)[:60]}")
        if "error" in event and not event.get("choices"):
            err = event["error"]
            message = err.get("message") if isinstance(err, dict) else err
            raise Malformed("event-error", f"the server sent an error: {' '.join(str(message).split())[:160]}")
        self.prompt_ids(event.get("prompt_token_ids"), "prompt_token_ids")
        usage = event.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("completion_tokens"), int):
                self.result.completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                self.result.prompt_tokens = usage["prompt_tokens"]
        choices = event.get("choices", [] if usage else None)
        if not isinstance(choices, list) or (not streamed and not choices):
            raise Malformed("event-malformed", f"choices is {json.dumps(choices)[:40]}, not a list of choices")
        for choice in choices:
            self.choice(choice, streamed)

    def choice(self, choice, streamed: bool) -> None:
        req, result = self.result.request, self.result
        if not isinstance(choice, dict):
            raise Malformed("event-malformed", f"a choice is {type(choice).__name__}, not an object")
        if req.kind == "chat":
            key = "delta" if streamed else "message"
            delta = choice.get(key)
            if not isinstance(delta, dict):
                raise Malformed("event-malformed", f"{key} is {json.dumps(delta)[:40]}, not an object")
            piece = _str(delta.get("content"), f"{key}.content")
            thought = _str(delta.get("reasoning_content"), f"{key}.reasoning_content") or \
                _str(delta.get("reasoning"), f"{key}.reasoning")
            self.tool_calls(delta.get("tool_calls"), key, streamed)
        else:
            if not isinstance(choice.get("text"), str):
                raise Malformed("event-malformed", f"text is {json.dumps(choice.get('text'))[:40]}, not a string")
            piece, thought = choice["text"], ""
        ids = _ints(choice.get("token_ids"), "token_ids")
        if (piece or thought or ids) and result.ttft_s is None:
            result.ttft_s = time.monotonic() - self.started
        self.content.append(piece)
        self.reasoning.append(thought)
        result.token_ids.extend(ids)
        self.prompt_ids(choice.get("prompt_token_ids"), "choice.prompt_token_ids")
        if choice.get("finish_reason") is not None:
            result.finish_reason = _str(choice["finish_reason"], "finish_reason")
        if req.logprobs and choice.get("logprobs") is not None and result.logprobs_problem is None:
            try:
                if not isinstance(choice["logprobs"], dict):
                    raise ValueError(f"logprobs is {type(choice['logprobs']).__name__}")
                result.logprobs = (result.logprobs or []) + _logprobs(choice["logprobs"], req.kind)
            except (ValueError, AttributeError, TypeError) as exc:
                result.logprobs_problem = str(exc)[:120]

    def tool_calls(self, value, key: str, streamed: bool) -> None:
        """OpenAI tool calls: whole in a message; in a stream, pieces keyed by `index` whose name comes once
        and whose `arguments` strings concatenate. A wrong shape is a malformed event, as for content."""
        if value is None:
            return
        if not isinstance(value, list):
            raise Malformed("event-malformed", f"{key}.tool_calls is {json.dumps(value)[:40]}, not a list")
        for position, call in enumerate(value):
            if not isinstance(call, dict) or not isinstance(call.get("function", {}), dict):
                raise Malformed("event-malformed", f"{key}.tool_calls[{position}] is {json.dumps(call)[:60]}, "
                                                   "not a call with a function object")
            index = call.get("index", position) if streamed else len(self.calls)
            if not isinstance(index, int) or isinstance(index, bool):
                raise Malformed("event-malformed", f"{key}.tool_calls[{position}].index is {index!r}, not an integer")
            function = call.get("function") or {}
            merged = self.calls.setdefault(index, {"name": "", "arguments": "", "id": None})
            name = _str(function.get("name"), f"{key}.tool_calls[{position}].function.name")
            if name:
                merged["name"] = name if not streamed or not merged["name"] else merged["name"] + name
            args = function.get("arguments")
            if args is not None and not isinstance(args, str):
                args = json.dumps(args)   # a server that sends an object instead of a string: keep it, judge it later
                merged["arguments_not_string"] = True
            merged["arguments"] += args or ""
            if call.get("id"):
                merged["id"] = call["id"]
            if self.result.ttft_s is None:
                self.result.ttft_s = time.monotonic() - self.started

    def finish(self) -> None:
        self.result.content, self.result.reasoning = "".join(self.content), "".join(self.reasoning)
        self.result.tool_calls = [self.calls[i] for i in sorted(self.calls)]


def _events(ex: transport.Exchange) -> Iterator:
    """The JSON payloads of a server-sent-events stream; returns at [DONE], raises when it never comes."""
    ctype = ex.response.getheader("Content-Type") or ""
    if "text/event-stream" not in ctype:
        snippet = " ".join(ex.body()[:200].decode("utf-8", errors="replace").split())
        raise Malformed("not-event-stream", f"HTTP 200 with Content-Type {ctype or 'none'!r}: {snippet[:100]!r}")
    for raw in ex.lines():
        line = raw.decode("utf-8", errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            raise Malformed("event-not-json", f"an event is not JSON: {data[:60]!r}") from None
    if not ex.received:
        raise HTTPFailure("closed", "the server closed the stream right after its headers")
    raise Malformed("stream-no-done", "the stream ended without data: [DONE]")


def send(base_url: str, model: str, req: Request, timeouts: Timeouts | float = 900, run: Deadline | None = None) -> Result:
    """One request; never raises: every failure is result.error_kind / result.error."""
    if not isinstance(timeouts, Timeouts):
        timeouts = Timeouts(request=float(timeouts))
    path, body = _body(model, req)
    result = Result(req)
    started = time.monotonic()
    collector = _Collector(result, started)
    try:
        with transport.Exchange(base_url, timeouts, run, timeouts.request) as ex:
            ex.open("POST", path, body, accept="text/event-stream" if req.stream else "application/json")
            if req.stream:
                for event in _events(ex):
                    collector.event(event)
            else:
                data = ex.body()
                try:
                    doc = json.loads(data.decode("utf-8"))
                except ValueError:
                    ctype = ex.response.getheader("Content-Type") or "none"
                    snippet = " ".join(data[:200].decode("utf-8", errors="replace").split())
                    raise Malformed("not-json", f"HTTP 200 with Content-Type {ctype!r} and a body that is not JSON: "
                                                f"{snippet[:100]!r}") from None
                collector.event(doc, streamed=False)
    except HTTPFailure as exc:
        result.error_kind, result.error = exc.kind, exc.detail
    except Malformed as exc:
        result.error_kind, result.error = exc.kind, exc.detail
    except Exception as exc:  # noqa: BLE001 - a response verify did not foresee must not crash the run
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result.error_kind = "verify-internal"
        result.error = f"{type(exc).__name__}: {str(exc)[:100]} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
    result.latency_s = time.monotonic() - started
    collector.finish()
    if not result.completion_tokens:
        result.completion_tokens = len(result.token_ids)
    return result


def served_model(base_url: str, timeout: float = 10) -> str:
    """The first model id the server lists; one clear line (UserError) otherwise."""
    from .server import served_model as first_model
    return first_model(base_url, timeout)


def not_sent(req: Request) -> Result:
    return Result(req, error_kind="timeout-run", error="not sent: the run's deadline had passed")


def run(base_url: str, model: str, requests: list[Request], concurrency: int, timeouts: Timeouts | float = 900,
        on_done: Callable[[Result], None] | None = None, deadline: Deadline | None = None) -> tuple[list[Result], float]:
    """Send every request with at most `concurrency` in flight; returns results (in order) and wall time."""
    if not isinstance(timeouts, Timeouts):
        timeouts = Timeouts(request=float(timeouts))
    started = time.monotonic()
    results: dict[int, Result] = {}

    def one(req: Request) -> Result:
        return not_sent(req) if deadline is not None and deadline.passed else send(base_url, model, req, timeouts, deadline)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(one, r): i for i, r in enumerate(requests)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_done:
                on_done(results[futures[future]])
    return [results[i] for i in range(len(requests))], time.monotonic() - started
