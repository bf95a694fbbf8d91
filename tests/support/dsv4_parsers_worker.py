"""Runs vLLM's own `deepseek_v4` reasoning + tool-call parsers over DeepSeek-V4 outputs, whole and streamed,
inside prove's venv (standard library, `tokenizers` and vLLM only), the way vLLM's chat serving does:

- the Parser class is what `vllm serve --enable-auto-tool-choice --tool-call-parser deepseek_v4
  --reasoning-parser deepseek_v4` composes (ParserManager.get_parser), one instance per request;
- whole: `parser.parse(text, request, enable_auto_tools=True, model_output_token_ids=ids)`;
- streamed: one ChatStreamProcessor per request and chunking (serving.py's streaming path), `step()` per
  chunk with the chunk's text and token ids, the last chunk with finish_reason "stop".

The tokenizer is loaded with `--tokenizer-mode deepseek_v4` from a directory this script writes: a byte-level
stand-in whose special tokens are DeepSeek-V4's (see tests/fixtures/parsers/PROVENANCE.md). Chunks follow
token boundaries (the detokenizer holds back a chunk that ends inside a UTF-8 character, like vLLM's).

    python dsv4_parsers_worker.py REQUEST.json RESULT.json

REQUEST: {"cases": [...], "chunkings": {...}, "override": {"vllm.parser.deepseek_v4": "/path/file.py"}?}.
"""

import importlib.util
import json
import random
import sys
import tempfile
import traceback
from pathlib import Path

# DeepSeek-V4's special tokens that can appear in an output or a prompt (vLLM's deepseek_v4_encoding.py).
SPECIAL = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
           "<｜latest_reminder｜>", "<｜▁pad▁｜>"]


def byte_level_tokenizer(directory: Path) -> None:
    """256 byte tokens (no merges) plus SPECIAL as single added tokens, saved as tokenizer.json."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet, key=lambda c: ord(c)))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIAL[0], eos_token=SPECIAL[1],
                            pad_token=SPECIAL[-1]).save_pretrained(directory)


def override_modules(override: dict) -> None:
    """Load named modules from other files (e.g. the pristine parser) before vLLM imports them."""
    for name, path in override.items():
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


def boundaries(tokenizer, ids: list[int]) -> list[int]:
    """decoded length after each token prefix; -1 where the prefix ends inside a character."""
    out = []
    for i in range(len(ids) + 1):
        text = tokenizer.decode(ids[:i], skip_special_tokens=False)
        out.append(-1 if text.endswith("\ufffd") else len(text))
    return out


def chunkings(text: str, ids: list[int], ends: list[int], spec: dict) -> dict[str, list[int]]:
    """Named chunkings as sorted token indices where a chunk ends (the last is len(ids))."""
    n, at_char = len(ids), {c: i for i, c in enumerate(ends) if c >= 0}
    out = {"one-delta": [n], "token": list(range(1, n + 1))}
    for k in spec.get("groups", []):
        out[f"groups-of-{k}"] = sorted(set(range(k, n, k)) | {n})
    for seed in spec.get("seeds", []):
        rng, cuts, i = random.Random(seed), set(), 0
        while i < n:
            i += rng.randint(1, spec.get("max_group", 8))
            cuts.add(min(i, n))
        out[f"random-{seed}"] = sorted(cuts)
    tag_cuts = set()
    for start in range(len(text)):
        if text.startswith("<｜", start) or text.startswith("</｜", start) or text.startswith("<think", start) \
                or text.startswith("</think", start):
            end = text.find(">", start)
            for c in (start + 1, start + 2, (start + end) // 2, end):
                if c in at_char:
                    tag_cuts.add(at_char[c])
    if tag_cuts:
        out["inside-tags"] = sorted(tag_cuts | {n})
    return out


def drive(parser_cls, tokenizer, case: dict, cuts: list[int] | None, ids: list[int], prompt_ids: list[int]):
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.chat_completion.stream_processor import ChatStreamProcessor

    request = ChatCompletionRequest(model="dsv4", messages=case["messages"], tools=case.get("tools"),
                                    tool_choice=case.get("tool_choice", "auto"),
                                    chat_template_kwargs=case.get("chat_template_kwargs"))
    parser = parser_cls(tokenizer, request.tools, chat_template_kwargs=request.chat_template_kwargs, model_config=None)
    if cuts is None:
        parser.set_prompt_token_ids(prompt_ids)
        reasoning, content, calls = parser.parse(tokenizer.decode(ids, skip_special_tokens=False), request,
                                                 enable_auto_tools=True, model_output_token_ids=ids)
        return {"reasoning": reasoning, "content": content,
                "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls or []]}
    processor = ChatStreamProcessor(request, parser, enable_auto_tools=True, parser_cls=parser_cls)
    reasoning, content, calls, emitted, start, finish = "", "", {}, "", 0, None
    for number, end in enumerate(cuts):
        text = tokenizer.decode(ids[:end], skip_special_tokens=False)
        last = number == len(cuts) - 1
        delta_text = "" if text.endswith("\ufffd") and not last else text[len(emitted):]
        emitted += delta_text
        finished = ("length" if case.get("truncated") else "stop") if last else None
        step = processor.step(delta_text, ids[start:end], finished, prompt_ids)
        start, delta = end, step.delta
        finish = step.finish_reason or finish
        if delta is None:
            continue
        reasoning += delta.reasoning or ""
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"name": "", "arguments": "", "ids": []})
            if tc.id:
                slot["ids"].append(tc.id)
            if tc.function is not None:
                slot["name"] += tc.function.name or ""
                slot["arguments"] += tc.function.arguments or ""
    return {"reasoning": reasoning, "content": content, "finish_reason": finish, "chunks": len(cuts),
            "tool_calls": [calls[i] for i in sorted(calls)]}


def run(request: dict) -> dict:
    override_modules(request.get("override", {}))
    from vllm.parser.parser_manager import ParserManager
    from vllm.tokenizers import get_tokenizer
    from vllm.tokenizers.deepseek_v4_encoding import encode_messages

    directory = Path(tempfile.mkdtemp(prefix="dsv4-parsers-tokenizer-"))
    byte_level_tokenizer(directory)
    tokenizer = get_tokenizer(str(directory), tokenizer_mode="deepseek_v4")
    parser_cls = ParserManager.get_parser(tool_parser_name="deepseek_v4", reasoning_parser_name="deepseek_v4",
                                          enable_auto_tools=True, model_name="dsv4", tokenizer=tokenizer)
    results = []
    for case in request["cases"]:
        thinking = (case.get("chat_template_kwargs") or {}).get("thinking", True)
        prompt = encode_messages(case["messages"], thinking_mode="thinking" if thinking else "chat")
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        ids = tokenizer.encode(case["output"], add_special_tokens=False)
        entry = {"name": case["name"], "tokens": len(ids), "streamed": {}}
        try:
            assert tokenizer.decode(ids, skip_special_tokens=False) == case["output"], "tokenizer round trip"
            entry["whole"] = drive(parser_cls, tokenizer, case, None, ids, prompt_ids)
            ends = boundaries(tokenizer, ids)
            for name, cuts in chunkings(case["output"], ids, ends, request.get("chunkings", {})).items():
                try:
                    entry["streamed"][name] = drive(parser_cls, tokenizer, case, cuts, ids, prompt_ids)
                except Exception as exc:  # one chunking failing must not hide the others
                    entry["streamed"][name] = {"error": f"{type(exc).__name__}: {exc}",
                                               "traceback": traceback.format_exc()[-2000:]}
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()[-2000:]
        results.append(entry)
    import vllm

    return {"vllm": vllm.__version__, "parser": parser_cls.__mro__[1].__name__,
            "reasoning_parser": parser_cls.reasoning_parser_cls.__name__,
            "tool_parser": parser_cls.tool_parser_cls.__name__,
            "special_token_ids": {s: tokenizer.convert_tokens_to_ids(s) for s in SPECIAL}, "cases": results}


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: dsv4_parsers_worker.py REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    try:
        request = json.loads(Path(sys.argv[1]).read_text())
    except (OSError, ValueError) as exc:
        print(f"dsv4_parsers_worker: cannot read {sys.argv[1]}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not isinstance(request, dict) or not isinstance(request.get("cases"), list) \
            or not all(isinstance(c, dict) and {"name", "messages", "output"} <= c.keys() for c in request["cases"]):
        print(f"dsv4_parsers_worker: {sys.argv[1]}: expected {{\"cases\": [{{name, messages, output, ...}}]}}",
              file=sys.stderr)
        return 2
    Path(sys.argv[2]).write_text(json.dumps(run(request), ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
