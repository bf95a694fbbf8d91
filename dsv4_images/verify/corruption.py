"""Corruption detectors: cheap text symptoms for any model, and the tiny model's exact rule.

Each detector states one principle in its module under `detectors/`; in short:

- script-mixing (detectors/scripts.py, latin_words.py): a letter of a script the answer's language
  does not use, sitting where a word of that language should be, unless the text sets it off as a
  name or term; one or two Greek letters are math symbols; Latin terms are at home in any language,
  but English *prose*, or a lone function word of a Latin-script language ("the", "wieder"), inside
  a CJK sentence is not;
- special-token, bpe-marker, control-char, markup-fragment (detectors/tokens.py): tokenizer pieces
  by their shapes across tokenizer families, think tags in an answer, Ġ/Ċ/▁ markers, characters
  that are not text, HTML outside code when nobody asked for HTML;
- replacement-char, mojibake (detectors/encoding.py): bytes not decoded as the UTF-8 they were,
  on positive evidence only; samples the text sets apart in quotes or code are mentions;
- token-salad (detectors/salad.py): dense tokens that have no word shape, brackets that close
  nothing, function words in an order English does not have, Chinese words spaced apart in no order;
- dropped-word (detectors/grammar.py): a word the grammar requires is missing ("raising an.");
- repetition (detectors/repetition.py): a unit repeated back to back, weighed by how much it says,
  or a whole paragraph said twice;
- code-syntax (detectors/code.py, sql.py, shell.py): a fenced block that does not parse in its
  declared language (SQL: what no dialect accepts; shell: `bash -n`);
- empty, truncated-without-reason, stopped-mid-sentence (detectors/ending.py): no text, a finish
  reason that explains nothing (None: the stream delivered none, a server failure listed in
  `STREAM_SYMPTOMS`), an ending no sentence or structure can have when the model stopped, or when
  the reason is `UNKNOWN` (not recorded) or a `length` stop whose limit no count explains.

Code, inline code and math are judged only by the detectors meant for them (detectors/markdown.py).
Detectors find symptoms, not wrong answers: a fluent wrong answer is for the answer checks
(`verify.answers`). `detect` keeps its original keyword arguments; the later ones are optional.
"""

from __future__ import annotations

from .detectors import Finding
from .detectors import code, encoding, ending, grammar, latin_words, markdown, repetition, salad, scripts, tokens
from .detectors.ending import STREAM_SYMPTOMS, UNKNOWN
from .detectors.scripts import script_of, scripts_in

__all__ = ["Finding", "STREAM_SYMPTOMS", "SYMPTOMS", "UNKNOWN", "detect", "rule_findings", "script_of", "scripts_in"]

SYMPTOMS = ("empty", "truncated-without-reason", "stopped-mid-sentence", "special-token", "bpe-marker",
            "control-char", "replacement-char", "mojibake", "script-mixing", "markup-fragment", "token-salad",
            "repetition", "code-syntax", "dropped-word")


def detect(text: str, *, prompt: str = "", finish_reason: str | None | object = "stop",
           completion_tokens: int | None = None, max_tokens: int | None = None,
           allowed_scripts: set[str] | None = None, allow_html: bool | None = None, lang: str | None = None,
           context_limited: bool | None = None, max_model_len: int | None = None, prompt_tokens: int | None = None,
           reasoning_in_content: bool = False) -> list[Finding]:
    """Every symptom found in one output (empty list: looks clean).

    finish_reason: what the server sent; None when the stream ended without one (verify passes its
    client's value, None included: a server or stream failure, reported in `STREAM_SYMPTOMS`);
    `UNKNOWN` when it was not recorded (offline texts): the ending is then judged as for a stop.
    lang: the answer's expected language (e.g. "en", "zh"); default: read from the prompt.
    allowed_scripts: more scripts to accept (e.g. {"cyrillic"}); allow_html: markup is expected
    (default: when the prompt mentions markup). context_limited, or max_model_len with
    prompt_tokens: a `length` stop short of max_tokens was the server's context window.
    reasoning_in_content: the server runs without a reasoning parser, so one leading think block
    (or a lone closing tag) is expected in the text; by default no think tag belongs in an answer.
    """
    findings: list[Finding] = []
    if not text.strip():
        findings.append(Finding("empty", f"no text (finish_reason={finish_reason!r})"))
    window = (completion_tokens, max_tokens, context_limited, max_model_len, prompt_tokens)
    findings += ending.finish(finish_reason, *window)
    if not text.strip():
        return findings
    layout = markdown.layout(text)
    prose = layout.prose
    why = ending.ending_to_judge(finish_reason, *window)
    if why is not None:
        findings += ending.mid_sentence(layout, why)
    findings += tokens.special_tokens(text, prose, prompt, reasoning_in_content)
    findings += tokens.bpe_markers(text, prose)
    findings += encoding.replacement_chars(text, layout.spans, prompt)
    findings += tokens.control_chars(text)
    findings += encoding.mojibake(text, layout.spans)
    host = scripts.host_scripts(lang, prompt, prose)
    invited = scripts.scripts_in(prompt) | scripts.named_scripts(prompt) | set(allowed_scripts or ())
    script_findings = scripts.foreign_letters(prose, host, invited) \
        + latin_words.latin_prose_fragments(prose, host, scripts.named_scripts(prompt))
    findings += script_findings[:1]
    if allow_html is None or not allow_html:
        findings += tokens.markup(prose, prompt if allow_html is None else "")
    findings += (salad.token_salad(prose) or salad.determiner_salad(prose) or salad.spaced_cjk_salad(prose))
    findings += grammar.dropped_words(prose)
    findings += repetition.repetition(text, prose, [b.body for b in layout.blocks])
    findings += code.code_syntax(layout.blocks)
    return findings


def rule_findings(prompt_last_token: int, token_ids: list[int]) -> list[Finding]:
    """The tiny model's exact rule: every generated token must be next() of the one before it."""
    from ..in_image.tinymodel import next_token, rule_violations
    bad = rule_violations(prompt_last_token, token_ids)
    if not bad:
        return []
    i = bad[0]
    before = prompt_last_token if i == 0 else token_ids[i - 1]
    return [Finding("rule", f"{len(bad)}/{len(token_ids)} tokens break the rule; first at {i}: "
                            f"{token_ids[i]} after {before}, expected {next_token(before)}")]
