"""A fake vLLM OpenAI server for verify's tests (test-only; the package never imports it).

The healthy mode behaves like the cpu image: it serves "tiny-mtp" and generates what the tiny
model generates (every token follows dsv4_images.in_image.tinymodel's rule), streams chat and
completions with vLLM's `return_token_ids` fields, one chunk per speculative step, answers
logprobs, non-streamed requests and POST /tokenize, stops at max_model_len with `length` as vLLM
does, and counts its speculative steps into /metrics under vLLM's real counter names,
per-position counters included. Every other mode misbehaves in one way (MODES).

    with FakeVLLM("stream-cut") as server:
        ... server.url ...
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dsv4_images.in_image.tinymodel import TOKENS, next_token

K = 2   # drafts per step, as the cpu target serves

MODES = {
    "healthy": "behaves like the cpu image (acceptance 90%)",
    "baseline": "the same model with MTP off: no spec-decode counters",
    # /v1/models
    "models-not-json": "GET /v1/models answers HTML",
    "models-not-list": "GET /v1/models answers a JSON list",
    "models-empty": "GET /v1/models lists no model",
    "models-http-500": "GET /v1/models answers 500",
    "models-no-limit": "GET /v1/models states no max_model_len",
    "models-hang": "GET /v1/models never answers",
    "no-tokenize": "POST /tokenize answers 404",
    # /metrics
    "metrics-http-500": "GET /metrics answers 500",
    "metrics-not-utf8": "GET /metrics answers bytes that are not UTF-8",
    "metrics-not-prometheus": "GET /metrics answers JSON",
    "metrics-absent": "MTP is expected but /metrics has no spec-decode counters",
    "metrics-zero": "spec-decode counters present but never move",
    "counters-decrease": "the counters drop after the fourth scrape (a restart)",
    "metrics-hang": "GET /metrics never answers",
    # generation
    "completions-http-500": "every generation answers 500",
    "stream-cut": "the connection closes mid-chunk",
    "stream-no-done": "the stream ends cleanly without [DONE]",
    "sse-not-object": "events are JSON arrays",
    "sse-not-json": "events are not JSON at all",
    "sse-null-delta": "chat deltas and completion texts are null",
    "sse-null-choices": "choices are null",
    "slow-headers": "generations answer only after 5 s",
    "stall": "streams stop after two events and hang",
    "trickle": "streams send one byte every 0.2 s, forever",
    # model-based signals
    "bad-draft": "the MTP head is broken: acceptance 5%",
    "collapse": "acceptance falls with every request, to 0 after ten",
    "stream-drops-words": "streaming drops one step's text in five (vllm#52469)",
    "batch-corrupts": "a request sharing the batch with another goes off the rule",
    "unlikely-logprobs": "text follows the rule but logprobs say a run of tokens had p < 1e-5",
    "diverge": "as a baseline: greedy outputs leave the rule after 6 tokens",
    # tool calling (verify --workload tools); healthy modes answer every tools request with one call
    "tools-unsupported": "tools requests answer 400: no --tool-call-parser (as vLLM without one)",
    "tools-markup": "DSML markup leaks into the content next to the structured call",
    "tools-args-not-json": "call arguments are not JSON",
    "tools-args-schema": "call arguments are JSON but violate the tool's schema",
    "tools-stream-differs": "streamed call arguments differ from the non-streamed ones at temperature 0",
    "tools-required-text": "tool_choice=required is answered with plain text, no call",
    "tools-stream-drops-call": "the tool call is dropped when streamed (only the non-streamed answer has it)",
    "tools-auto-text": "tool_choice=auto never calls a tool: the prompt is answered in words",
    "tools-like-tiny": "as the cpu image's tiny model: auto answers words, required starts a call cut at max_tokens",
}
# Written after verify's code, to see how it copes with what it was not designed for.
UNDESIGNED = {
    "ok-everything": "answers 'OK.' to every prompt (finish stop), counters healthy",
    "html-200": "generations answer 200 with an HTML error page",
    "gzip": "every body gzip-compressed (Content-Encoding: gzip), whatever the client accepts",
    "double-done": "streams send [DONE] twice, then a stray event",
    "nan-metrics": "spec-decode counters read NaN and +Inf",
    "counters-zero": "all counters reset to exactly zero after the third scrape",
    "close-after-headers": "generations send 200 headers, then close the connection",
    "logprobs-nan": "logprobs are NaN",
}
MODES |= UNDESIGNED


def text_of(token_id: int) -> str:
    return TOKENS[token_id].replace("Ġ", " ")


def prompt_ids(body: dict) -> list[int]:
    if "messages" in body:
        ids = [0]
        for m in body["messages"]:
            ids += [4] + [6 + b for b in str(m.get("content", "")).encode()] + [6 + 10]
        return ids + [5]
    return [6 + b for b in str(body.get("prompt", "")).encode()]


class State:
    def __init__(self, mode: str, model: str, max_model_len: int | None):
        self.mode, self.model, self.max_model_len = mode, model, max_model_len
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.scrapes = 0
        self.drafts = self.draft_tokens = self.accepted = 0
        self.per_pos = [0] * K
        self.stopping = threading.Event()

    def accepted_in_step(self, request_index: int, step: int) -> int:
        if self.mode == "bad-draft":
            return 1 if step % 10 == 9 else 0
        if self.mode == "collapse":
            return K if step % 10 < max(0, 10 - request_index) else 0
        return K - 1 if step % 5 == 4 else K

    def count_step(self, accepted: int) -> None:
        if self.mode in ("baseline", "diverge", "metrics-absent", "metrics-zero"):
            return
        with self.lock:
            self.drafts += 1
            self.draft_tokens += K
            self.accepted += accepted
            for p in range(accepted):
                self.per_pos[p] += 1


def generate(state: State, body: dict, index: int, batched: bool) -> tuple[list[int], list[list[int]], int]:
    """(prompt ids, token ids per speculative step, completion tokens) for one request."""
    prompt = prompt_ids(body)
    room = (state.max_model_len or 1 << 30) - len(prompt)
    n = max(0, min(int(body.get("max_tokens") or 16), room))
    steps, last, step = [], prompt[-1], 0
    while sum(map(len, steps)) < n:
        accepted = state.accepted_in_step(index, step)
        state.count_step(accepted)
        ids = []
        for _ in range(accepted + 1):
            produced = sum(map(len, steps)) + len(ids)
            if produced >= n:
                break
            last = next_token(last)
            if (state.mode == "diverge" and produced >= 6) or (state.mode == "batch-corrupts" and batched and produced >= 5):
                last = (last * 7 + 3) % len(TOKENS)
            ids.append(last)
        steps.append(ids)
        step += 1
    return prompt, steps, n


def logprobs_for(state: State, chat: bool, ids: list[int], start: int) -> dict:
    values = [-12.0 if state.mode == "unlikely-logprobs" and 3 <= start + i < 9 else -1e-4 for i in range(len(ids))]
    if state.mode == "logprobs-nan":
        values = [float("nan")] * len(ids)
    if chat:
        return {"content": [{"token": text_of(t), "logprob": v, "bytes": list(text_of(t).encode()),
                             "top_logprobs": [{"token": text_of(t), "logprob": v, "bytes": list(text_of(t).encode())}]}
                            for t, v in zip(ids, values)]}
    return {"text_offset": list(range(len(ids))), "token_logprobs": values, "tokens": [text_of(t) for t in ids],
            "top_logprobs": [{text_of(t): v} for t, v in zip(ids, values)]}


def _instance(schema: dict):
    """A small value valid against the schema subset the tools workload uses."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: _instance(v) for k, v in schema.get("properties", {}).items() if k in schema.get("required", [])}
    if kind == "boolean":
        return False
    if kind in ("number", "integer"):
        return schema.get("minimum", 1)
    return "USD" if schema.get("pattern") == "^[A-Z]{3}$" else "Paris"


def tool_call_for(text: str, tools: list[dict]) -> tuple[str, dict]:
    """(name, arguments) of the offered tool whose name shares a word with the prompt, else the first tool."""
    words = {"weather": ("weather", "天气"), "currency": ("dollar", "euro", "currency"), "light": ("light",)}
    for tool in tools:
        name = tool["function"]["name"]
        if any(w in text.lower() for key, ws in words.items() if key in name for w in ws):
            return name, _instance(tool["function"].get("parameters") or {})
    first = tools[0]["function"]
    return first["name"], _instance(first.get("parameters") or {})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-vllm/0"

    def log_message(self, *args) -> None:
        pass

    @property
    def state(self) -> State:
        return self.server.state

    # ---- plumbing ---------------------------------------------------------------------------

    def reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if self.state.mode == "gzip":
            import gzip
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, doc, status: int = 200) -> None:
        self.reply(status, json.dumps(doc).encode())

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        if self.state.mode == "gzip":
            import zlib
            self.zip = zlib.compressobj(wbits=31)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Connection", "close")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        if self.state.mode == "gzip" and data:
            data = self.zip.compress(data) + self.zip.flush(2)    # zlib.Z_SYNC_FLUSH
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, payload) -> None:
        self.chunk(b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) + b"\n\n")

    def hang(self) -> None:
        self.state.stopping.wait(60)

    # ---- routes -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        mode = self.state.mode
        if self.path == "/v1/models":
            self.models(mode)
        elif self.path == "/metrics":
            self.metrics(mode)
        elif self.path == "/health":
            self.reply(200, b"")
        else:
            self.reply_json({"error": "not found"}, 404)

    def models(self, mode: str) -> None:
        card = {"id": self.state.model, "object": "model", "created": 1, "owned_by": "vllm",
                "root": "/opt/dsv4-flash/models/tiny-mtp", "parent": None, "max_model_len": self.state.max_model_len}
        if mode == "models-no-limit":
            del card["max_model_len"]
        if mode == "models-not-json":
            self.reply(200, b"<html><body>Bad Gateway</body></html>", "text/html")
        elif mode == "models-not-list":
            self.reply_json([card])
        elif mode == "models-empty":
            self.reply_json({"object": "list", "data": []})
        elif mode == "models-http-500":
            self.reply_json({"error": "engine dead"}, 500)
        elif mode == "models-hang":
            self.hang()
        else:
            self.reply_json({"object": "list", "data": [card]})

    def metrics(self, mode: str) -> None:
        s = self.state
        with s.lock:
            s.scrapes += 1
            if mode == "counters-decrease" and s.scrapes == 5:
                s.drafts, s.draft_tokens, s.accepted, s.per_pos = 3, 6, 5, [3, 2]
            if mode == "counters-zero" and s.scrapes == 4:
                s.drafts, s.draft_tokens, s.accepted, s.per_pos = 0, 0, 0, [0] * K
            counters = (s.drafts, s.draft_tokens, s.accepted, list(s.per_pos))
            if mode == "nan-metrics":
                counters = (float("nan"), float("inf"), float("nan"), [float("nan")] * K)
        if mode == "metrics-http-500":
            return self.reply(500, b"Internal Server Error", "text/plain")
        if mode == "metrics-not-utf8":
            return self.reply(200, b"\xff\xfe# TYPE x counter\n\x80\x81 1\n", "text/plain")
        if mode == "metrics-not-prometheus":
            return self.reply_json({"drafts": counters[0]})
        if mode == "metrics-hang":
            return self.hang()
        labels = f'engine="0",model_name="{s.model}"'
        lines = ["# HELP python_gc_objects_collected_total Objects collected during gc",
                 "# TYPE python_gc_objects_collected_total counter", 'python_gc_objects_collected_total{generation="0"} 9.0',
                 "# HELP vllm:num_requests_running Number of requests in model execution batches.",
                 "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{labels}}} {s.in_flight}.0"]
        if mode not in ("baseline", "diverge", "metrics-absent"):
            drafts, draft_tokens, accepted, per_pos = counters
            for name, value in (("num_drafts", drafts), ("num_draft_tokens", draft_tokens), ("num_accepted_tokens", accepted)):
                lines += [f"# HELP vllm:spec_decode_{name}_total Spec decode {name}.",
                          f"# TYPE vllm:spec_decode_{name}_total counter",
                          f"vllm:spec_decode_{name}_total{{{labels}}} {float(value)}",
                          f"vllm:spec_decode_{name}_created{{{labels}}} 1.7e+09"]
            lines += ["# HELP vllm:spec_decode_num_accepted_tokens_per_pos_total Accepted tokens per draft position.",
                      "# TYPE vllm:spec_decode_num_accepted_tokens_per_pos_total counter"]
            lines += [f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position="{p}"}} {float(v)}'
                      for p, v in enumerate(per_pos)]
        self.reply(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8")

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        except ValueError:
            return self.reply_json({"error": "bad json"}, 400)
        if self.path == "/tokenize":
            if self.state.mode == "no-tokenize":
                return self.reply_json({"detail": "Not Found"}, 404)
            ids = prompt_ids(body)
            return self.reply_json({"count": len(ids), "max_model_len": self.state.max_model_len, "tokens": ids})
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self.reply_json({"error": "not found"}, 404)
        s = self.state
        with s.lock:
            index = s.requests
            s.requests += 1
            s.in_flight += 1
        try:
            time.sleep(0.01)   # long enough for requests sent together to overlap
            with s.lock:
                batched = s.in_flight > 1
            self.generation(body, self.path == "/v1/chat/completions", index, batched)
        finally:
            with s.lock:
                s.in_flight -= 1

    def generation(self, body: dict, chat: bool, index: int, batched: bool) -> None:
        mode = self.state.mode
        if mode == "completions-http-500":
            return self.reply_json({"object": "error", "message": "EngineCore encountered an issue", "code": 500}, 500)
        if mode == "slow-headers":
            self.state.stopping.wait(5)
        if mode == "html-200":
            return self.reply(200, b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "text/html")
        if mode == "close-after-headers":
            self.start_stream()
            self.wfile.flush()
            self.close_connection = True
            return
        if chat and body.get("tools") and body.get("tool_choice") in ("auto", "required"):
            return self.tool_answer(body, index)
        prompt, steps, n = generate(self.state, body, index, batched)
        if mode == "ok-everything":
            steps, n = [[6 + ord("O"), 6 + ord("K"), 6 + ord(".")]], 3
        want_lp = bool(body.get("logprobs"))
        if not body.get("stream"):
            return self.whole(chat, prompt, steps, n, want_lp)
        self.start_stream()
        head = {"id": f"cmpl-{index}", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": 1, "model": self.state.model}
        first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None} \
            if chat else None
        if chat:
            self.event({**head, "choices": [first], "prompt_token_ids": prompt})
        if mode == "trickle":
            while not self.state.stopping.is_set():
                self.chunk(b":")
                time.sleep(0.2)
            return
        done = 0
        for i, ids in enumerate(steps):
            if mode == "stall" and i == 2:
                return self.hang()
            if mode == "stream-cut" and i == len(steps) // 2:
                self.wfile.write(b"%x\r\ndata: {\"id\"" % 200)
                self.wfile.flush()
                return
            text = "".join(map(text_of, ids))
            if mode == "stream-drops-words" and i % 5 == 3:
                text = ""
            last = i == len(steps) - 1
            choice = {"index": 0, "logprobs": logprobs_for(self.state, chat, ids, done) if want_lp else None,
                      "finish_reason": ("stop" if mode == "ok-everything" else "length") if last else None,
                      "token_ids": ids}
            if chat:
                choice["delta"] = {"content": text}
            else:
                choice["text"] = text
                if i == 0:
                    choice["prompt_token_ids"] = prompt
            if mode == "sse-null-delta":
                choice["delta" if chat else "text"] = None
            event = {**head, "choices": None if mode == "sse-null-choices" else [choice]}
            if mode == "sse-not-json":
                self.event(b"{'choices': [" + text.encode())
                continue
            self.event([event] if mode == "sse-not-object" else event)
            done += len(ids)
        self.event({**head, "choices": [], "usage": {"prompt_tokens": len(prompt), "completion_tokens": n,
                                                     "total_tokens": len(prompt) + n}})
        if mode != "stream-no-done":
            self.event(b"[DONE]")
        if mode == "double-done":
            self.event(b"[DONE]")
            self.event({"choices": [{"index": 0, "delta": {"content": " stray"}, "token_ids": [9]}]})
        self.chunk(b"")

    def tool_answer(self, body: dict, index: int) -> None:
        """One call to the tool the prompt asks for, arguments valid against its schema (unless the mode says
        otherwise), streamed as vLLM does: the name in the first delta, the arguments in pieces."""
        mode, stream = self.state.mode, bool(body.get("stream"))
        if mode == "tools-unsupported":
            message = ('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
                       if body["tool_choice"] == "auto" else 'tool_choice="required" requires --tool-call-parser to be set')
            return self.reply_json({"object": "error", "message": message, "type": "BadRequestError", "code": 400}, 400)
        text = " ".join(m.get("content", "") for m in body.get("messages", []))
        name, args = tool_call_for(text, body["tools"])
        arguments = json.dumps(args)
        content = ""
        if mode == "tools-args-not-json":
            arguments = arguments.replace('"', "")[:-1]
        elif mode == "tools-args-schema":
            arguments = json.dumps({**{k: None for k in args}, "extra": 1})
        elif mode == "tools-stream-differs" and stream:   # still valid against the schema: only the pair differs
            other = {"celsius": "fahrenheit", "Paris": "Lyon", "USD": "EUR", "kitchen": "office"}
            arguments = json.dumps({k: (not v) if isinstance(v, bool) else other.get(v, v) if isinstance(v, str) else v + 1
                                    for k, v in args.items()})
        elif mode == "tools-markup":
            content = f'<｜DSML｜invoke name="{name}">'
        plain = (mode == "tools-required-text" and body["tool_choice"] == "required") or \
            (mode in ("tools-auto-text", "tools-like-tiny") and body["tool_choice"] == "auto") or \
            (mode == "tools-stream-drops-call" and stream)
        if plain:
            content = "" if mode == "tools-stream-drops-call" else " able about above across"
        if mode == "tools-like-tiny":   # measured on the cpu image: the DSML parser hands on {} for the cut call
            name, arguments = body["tools"][0]["function"]["name"], "{}"
        calls = [] if plain else [{"id": f"chatcmpl-tool-{index}", "type": "function",
                                   "function": {"name": name, "arguments": arguments}}]
        finish = "length" if mode == "tools-like-tiny" else "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22}
        head = {"id": f"chatcmpl-{index}", "created": 1, "model": self.state.model}
        if not stream:
            message = {"role": "assistant", "content": content or None, "reasoning_content": None, "tool_calls": calls}
            return self.reply_json({**head, "object": "chat.completion", "usage": usage,
                                    "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
        head["object"] = "chat.completion.chunk"
        self.start_stream()
        self.event({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        if content:
            self.event({**head, "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]})
        for call in calls:
            first = {"index": 0, "id": call["id"], "type": "function", "function": {"name": name, "arguments": ""}}
            self.event({**head, "choices": [{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}]})
            for at in range(0, len(arguments), 7):
                piece = {"index": 0, "function": {"arguments": arguments[at:at + 7]}}
                self.event({**head, "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}]})
        self.event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        self.event({**head, "choices": [], "usage": usage})
        self.event(b"[DONE]")
        self.chunk(b"")

    def whole(self, chat: bool, prompt: list[int], steps: list[list[int]], n: int, want_lp: bool) -> None:
        ids = [t for step in steps for t in step]
        text = "".join(map(text_of, ids))
        choice = {"index": 0, "finish_reason": "stop" if self.state.mode == "ok-everything" else "length", "token_ids": ids,
                  "logprobs": logprobs_for(self.state, chat, ids, 0) if want_lp else None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text, "reasoning_content": None}
        else:
            choice |= {"text": text, "prompt_token_ids": prompt}
        doc = {"id": "cmpl-x", "object": "chat.completion" if chat else "text_completion", "created": 1,
               "model": self.state.model, "choices": [choice],
               "usage": {"prompt_tokens": len(prompt), "completion_tokens": n, "total_tokens": len(prompt) + n}}
        if chat:
            doc["prompt_token_ids"] = prompt
        self.reply_json(doc)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (verify's timeouts do that on purpose) is no server error."""
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeVLLM:
    def __init__(self, mode: str = "healthy", model: str = "tiny-mtp", max_model_len: int | None = 1024):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.state = State(mode, model, max_model_len)
        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.state = self.state
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeVLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.state.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
