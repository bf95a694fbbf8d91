"""The corruption detectors, measured on the tuning inputs (evaluate.TUNING_INPUTS: tests/fixtures/corruption/
tuning.json, written for the project, and heldout-v1.json, held-out v1, measured once at 76.8%/18.3% on 2026-11-30,
then used for tuning; neither measures generalisation any more), and each detector's principle on cases that sit
on either side of its line."""

from pathlib import Path

import pytest

from dsv4_images.in_image import tinymodel
from dsv4_images.verify import evaluate
from dsv4_images.verify.corruption import SYMPTOMS, detect, rule_findings

TUNING = Path(__file__).parent.parent / "fixtures" / "corruption" / "tuning.json"
HELDOUT_V1 = Path(__file__).parent.parent / "fixtures" / "corruption" / "heldout-v1.json"
CLEAN_KINDS_REQUIRED = {"code", "latex", "table", "list", "json", "cjk-math", "html-css", "names", "emoji", "encodings"}


def symptoms(text, **kw):
    return [f.symptom for f in detect(text, **kw)]


def test_both_labelled_sets_are_tuning_inputs_with_their_roles_stated():
    assert set(evaluate.TUNING_INPUTS) == {TUNING, HELDOUT_V1}
    assert "measured once at 76.8%/18.3% on 2026-11-30, then used for tuning" in evaluate.TUNING_INPUTS[HELDOUT_V1]


@pytest.mark.parametrize("path", [TUNING, HELDOUT_V1], ids=["tuning", "heldout-v1"])
def test_tuning_inputs_meet_the_target(report, path):
    result = evaluate.evaluate(evaluate.load(path))
    figures = result.as_dict()
    report[f"corruption_{path.stem.replace('-', '_')}_set"] = {
        "role": evaluate.TUNING_INPUTS[path],
        **{k: figures[k] for k in ("corrupted", "clean_flagged", "detection", "false_positive_rate", "misses",
                                   "false_positives")}}
    print(evaluate.render(result))
    assert result.detection >= 0.90, figures["misses"]
    assert result.false_positive_rate <= 0.05, figures["false_positives"]


def test_tuning_set_covers_both_languages_and_every_clean_category():
    items = evaluate.load(TUNING)
    assert {i["lang"] for i in items} >= {"en", "zh"}
    for label in ("clean", "corrupted"):
        assert {i["lang"] for i in items if i["label"] == label} >= {"en", "zh"}
    assert CLEAN_KINDS_REQUIRED <= {i["kind"] for i in items if i["label"] == "clean"}
    found = {finding.split(":", 1)[0] for i in items if i["label"] == "corrupted" for finding in evaluate.judge(i).findings}
    assert found == set(SYMPTOMS), set(SYMPTOMS) - found


# --- script mixing: a single letter counts, in either direction; set-off names do not ---------------

@pytest.mark.parametrize("text", [
    "The loop checks every еlement once.",                  # one Cyrillic е inside an English word
    "The result是 12 after both steps.",                       # Han glued to an English word
    "We add both legs, 然后 divide by the total time.",        # a Han run inside an English sentence
    "Sort the list, then σort it again.",                      # Greek inside a word
    "The function returns the 값 of the key.",                 # Hangul word in English
])
def test_a_foreign_letter_in_english_prose_is_flagged(text):
    assert "script-mixing" in symptoms(text, prompt="Explain it.", lang="en")


@pytest.mark.parametrize("text", [
    "计算机从数据中学习规律，поэтому可以预测。",                  # Cyrillic in Chinese
    "机器学习让计算机从데이터中学习。",                          # Hangul in Chinese
    "机器学习是让计算机从数据中学习 the patterns and 规律的方法。",   # English prose inside a Chinese sentence
    "每个递归函数都需要终止条件，否则which会无限调用。",            # an English function word glued in
])
def test_a_foreign_run_in_chinese_prose_is_flagged(text):
    assert "script-mixing" in symptoms(text, prompt="什么是机器学习？", lang="zh")


@pytest.mark.parametrize("text, prompt", [
    ("Tokyo (東京) is the capital of Japan.", "What is the capital of Japan?"),
    ("| Russia | Moscow | Москва |\n|---|---|---|", "Capitals with local names"),
    ("In Russian, hello is привет.", "How do you say hello?"),
    ("The area is πr², and Δx → 0 gives the derivative; the delay is 10 μs.", "Math"),
    ("Use the word 你好 when greeting someone.", "Teach me some Chinese words."),
    ("Local name: 서울", "Seoul?"),
    ("- 東京\n- 大阪", "List two cities"),
])
def test_names_symbols_and_invited_scripts_are_not_flagged(text, prompt):
    assert "script-mixing" not in symptoms(text, prompt=prompt, lang="en")


@pytest.mark.parametrize("text", [
    "CPU 擅长串行逻辑，GPU 适合并行计算，例如 NVIDIA B200。",
    "OOM 是 Out of Memory 的缩写。",
    "设宽为a厘米，则长为(a+5)厘米，使用 for 循环和 with open() 语句。",
    "“Hello, world” 的意思是“你好，世界”，出自《The C Programming Language》。",
    "俄国作家托尔斯泰（Лев Толстой）写了《战争与和平》。",
    "In this answer, everything is English.\n\n这一段是中文。",
])
def test_terms_and_set_off_names_in_chinese_are_not_flagged(text):
    assert "script-mixing" not in symptoms(text, prompt="请解释。", lang="zh")


def test_a_script_the_answer_presents_is_one_it_discusses():
    text = "Kyoto (京都) means capital city: 京 (kyō) means capital and 都 (to) means metropolis."
    assert "script-mixing" not in symptoms(text, prompt="What does Kyoto mean?", lang="en")
    assert "script-mixing" in symptoms("The result is 12 and 都 is fine.", prompt="?", lang="en")
    assert "script-mixing" in symptoms("Kyoto (京都) is old, and the result是 12.", prompt="?", lang="en")


def test_language_is_read_from_the_prompt_when_not_given():
    zh = "设兔有 x 只，解得 x = 12。"
    assert "script-mixing" not in symptoms(zh, prompt="兔有多少只？")
    assert "script-mixing" in symptoms(zh, prompt="How many rabbits?")
    assert "script-mixing" not in symptoms(zh, prompt="Answer in Chinese: how many rabbits?")


def test_an_unknown_language_code_falls_back_to_the_prompt():
    assert "script-mixing" not in symptoms("兔有 12 只。", prompt="兔有多少只？", lang="mixed")
    assert "script-mixing" in symptoms("兔有 12 只。", prompt="How many rabbits?", lang="xx")


def test_code_and_math_are_not_read_for_scripts_or_markup():
    text = "Run this:\n\n```python\nprint('поэтому 所以 <div>')\n```\n\nand `x = '東京'` then $\\alpha + \\beta$."
    assert detect(text, prompt="Show code.", lang="en") == []


# --- tokenizer pieces, bytes, markup -------------------------------------------------------------

@pytest.mark.parametrize("token", ["<｜end▁of▁sentence｜>", "<|im_end|>", "<|eot_id|>", "<|start_header_id|>", "[INST]",
                                   "[/INST]", "<<SYS>>", "</s>", "<unk>", "<end_of_turn>", "<extra_id_0>", "[SEP]",
                                   "<tool_call>", "<0x0A>"])
def test_special_tokens_of_every_family_are_leaks(token):
    assert "special-token" in symptoms(f"The answer is 4.{token} It is even.", prompt="2+2?")


@pytest.mark.parametrize("fragment", ["<｜end▁of", "<|im_end", "<|eot"])
def test_special_tokens_cut_in_half_are_leaks(fragment):
    assert "special-token" in symptoms(f"The answer is 4 {fragment}", prompt="2+2?", finish_reason="length")


def test_special_tokens_quoted_in_the_prompt_are_not_leaks():
    prompt = "What does <｜begin▁of▁sentence｜> mean?"
    assert detect("It marks the start: <｜begin▁of▁sentence｜>.", prompt=prompt) == []


def test_think_tags_never_belong_in_the_answer_unless_the_server_sends_raw_reasoning():
    leading = "<think>\n2 + 2 = 4\n</think>\n\nThe answer is 4."
    closing = "2 + 2 = 4, easy.\n</think>\n\nThe answer is 4."
    for text in (leading, closing, "The answer is 4.</think>"):
        assert "special-token" in symptoms(text, prompt="2+2?")          # a reasoning parser split nothing
    assert "special-token" not in symptoms(leading, prompt="2+2?", reasoning_in_content=True)
    assert "special-token" not in symptoms(closing, prompt="2+2?", reasoning_in_content=True)
    assert "special-token" in symptoms("The answer is 4.<think> Let me check.</think> Yes, 4.", prompt="2+2?",
                                       reasoning_in_content=True)
    assert "special-token" in symptoms("<think>a</think> b </think> c.", prompt="2+2?", reasoning_in_content=True)
    assert "special-token" not in symptoms("Tags like `</think>` end the reasoning.", prompt="What is </think>?")


def test_bpe_markers_but_not_maltese_or_sparklines():
    assert "bpe-marker" in symptoms("TheĠanswerĠisĠfour.", prompt="?")
    assert "bpe-marker" in symptoms("The answer is▁four▁today.", prompt="?")
    assert "bpe-marker" not in symptoms("Il-Ġimgħa l-oħra mort Għawdex.", prompt="Say it in Maltese.")
    assert "bpe-marker" not in symptoms("Load over the week: ▁▂▃▅▇ rising.", prompt="?")


def test_control_characters_but_not_emoji_joiners():
    assert "control-char" in symptoms("Four\x00.", prompt="?")
    assert "control-char" in symptoms("Four\ue000.", prompt="?")
    assert "control-char" in symptoms("Fo\u200bur.", prompt="?")
    assert "replacement-char" in symptoms("Fo\ufffdur.", prompt="?")
    assert detect("The family 👨‍👩‍👧 and the flag 🏴󠁧󠁢󠁥󠁮󠁧󠁿 are emoji. ☀️", prompt="Emoji?") == []


def test_mojibake_but_not_accented_text():
    assert "mojibake" in symptoms("Un cafÃ© au lait.", prompt="French?")
    assert "mojibake" in symptoms("æˆ‘å¾ˆå¥½ï¼Œè°¢è°¢ï¼", prompt="你好吗？")        # the last byte lost: still read
    assert "mojibake" in symptoms("长城锟斤拷是古代工程。", prompt="长城？")
    assert detect("Un café au lait à Besançon, «très bon», Ærø and Øresund.", prompt="French?") == []


def test_markup_outside_code_unless_asked_for():
    assert "markup-fragment" in symptoms("It is 11.</div><div> Done.", prompt="Apples?")
    assert "markup-fragment" in symptoms("Cats&#39; purrs.", prompt="Cats?")
    assert "markup-fragment" not in symptoms("Use <p> for paragraphs.", prompt="Explain HTML paragraphs.")
    assert "markup-fragment" not in symptoms("If a<b and b>c then a<c. Use List<String> here; x<sup>2</sup>.",
                                             prompt="Logic?")
    assert "markup-fragment" not in symptoms("| a | b<br>c |\n|---|---|", prompt="Table?")


# --- salad and repetition -------------------------------------------------------------------------

def test_token_salad_but_not_identifiers_units_or_math():
    assert "token-salad" in symptoms("It is denoted c and xK9#qz ]]>=|Vb _@!mm w7T8r{ is constant.", prompt="?")
    assert "token-salad" in symptoms("Descent ingly)]; _REF.eth ToListAsync($\"\") ){ ()=>{}[[ the loss.", prompt="?")
    clean = ("Set maxRetries=3, use sha256 and base64Payload on x86_64; f(x)=x^2+1 on [0, 1) costs 10ms. "
             "LaTeX, iOS, macOS, C++, AT&T, a<=b, arr[::-1] and parseHTTPResponse are fine, as are a), b) and c).")
    assert detect(clean, prompt="?") == []


def test_latin_junk_glued_into_chinese_is_salad_but_terms_are_not():
    assert "token-salad" in symptoms("机器学习是m4r1a让计算机8x7q从数据1z1z中学习。", prompt="什么是机器学习？")
    assert detect("用python写的sha256校验在B200和x86_64上都能跑，耗时10ms。", prompt="可以吗？") == []


def test_real_words_in_an_order_english_does_not_have():
    assert "token-salad" in symptoms("Maria the of takes apples a third the is 8 of left rest.", prompt="?")
    clean = ("Use the for loop or the is operator; the word 'the' of the 'of'-clause, a to b, and the "
             "to-do list are all fine.")
    assert detect(clean, prompt="?") == []


def test_symbol_salad_by_doubled_symbols_and_stray_brackets():
    assert "token-salad" in symptoms("An API lets programs talk. Ret_urn kwargs>>= $$nil ##deprec}} ruleset-- 0xff;; ok.",
                                     prompt="?")
    assert "token-salad" in symptoms("Energy. ationally izing ]] ();\n\t_DEFINE ),\n ernel apples.", prompt="?")
    clean = ("If a==b and x<<2 holds, C++ and C# agree; see [the docs](https://x.org) (or [0, 1)), 1) one 2) two. "
             "Alpha (Α α), beta (Β β) and gamma (Γ γ) come first; a) red b) blue iv) green.")
    assert "token-salad" not in symptoms(clean, prompt="?")
    wrapped = "The image (built with the cpu target,\nwhich serves the tiny model) stays small (about\n2 GB) on disk."
    assert detect(wrapped, prompt="?") == []


@pytest.mark.parametrize("text", [
    "the the the the the the the the",
    "```python\nfor i in range(3):\n    print(i)\n```\n\n" * 4,
    "Ann is 18. So Ann is 18 years old. So Ann is 18 years old. So Ann is 18 years old.",
    "从数据中学习，从数据中学习，从数据中学习，从数据中学习，从数据中学习，从数据中学习。",
    "竹子竹子竹子竹子竹子竹子竹子竹子",
    "Water falls as rain and flows back into the ocean, where it evaporates again in the sun.\n\n"
    "Water falls as rain and flows back into the ocean, where it evaporates again in the sun.",
    "```python\n" + "x = compute(x)\n" * 8 + "```",
])
def test_repetition_at_every_level(text):
    assert "repetition" in symptoms(text, prompt="?", finish_reason="length")


def test_a_list_item_that_loops_with_a_new_number_each_time():
    days = "\n".join(f"{i}. {d}" for i, d in enumerate(["Monday", "Tuesday"] + ["Sunday"] * 8, 1))
    assert "repetition" in symptoms(days, prompt="Days?", finish_reason="length")


def test_filler_loops_but_not_separators_or_big_numbers():
    assert "repetition" in symptoms("Done." + "\n" * 12 + "More.", prompt="?")
    assert "repetition" in symptoms("Great job! " + "🎉" * 15, prompt="?", finish_reason="length")
    clean = "Total\n" + "=" * 40 + "\n\n10^15 = 1000000000000000.\n\n---\n\nGreat job! 🎉🎉🎉"
    assert detect(clean, prompt="?") == []


def test_a_directory_tree_in_prose_is_not_salad():
    tree = "project/\n├── src/\n│   ├── main.py\n│   └── util.py\n├── tests/\n│   └── test_main.py\n├── docs/\n└── README.md"
    assert detect(tree, prompt="Show the layout.") == []


def test_legitimate_repetition_and_the_tiny_model_cycle_are_not_loops():
    table = "\n".join(f"- 7 × {i} = {7 * i}" for i in range(1, 10))
    assert "repetition" not in symptoms(table, prompt="7 times table")
    ids = [tinymodel.next_token(5)]
    while len(ids) < 1000:                       # ~1.5 turns of the 681-word cycle, as the cpu image serves it
        ids.append(tinymodel.next_token(ids[-1]))
    text = "".join(tinymodel.TOKENS[i] for i in ids).replace("Ġ", " ")
    assert detect(text, prompt="def fibonacci(n):", finish_reason="length", completion_tokens=1000, max_tokens=1000) == []


# --- code ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang, body", [
    ("python", "def f(x):\n    return x +\n"), ("json", '{"a": 1 "b": 2}'), ("toml", "a = = 1"),
    ("yaml", "a: 1\n b: 2\n  - c"), ("xml", "<a><b></a>"), ("javascript", "function f() { return (1;\n}"),
    ("go", "func main() {\n\tfmt.Println(\"x\"\n}"), ("css", ".a { color: red;"),
])
def test_code_that_does_not_parse_in_its_declared_language(lang, body):
    assert "code-syntax" in symptoms(f"```{lang}\n{body}\n```", prompt="Code?")


@pytest.mark.parametrize("lang, body", [
    ("python", ">>> x = [1, 2]\n>>> for v in x:\n...     print(v)\n1\n2"), ("python", "%timeit f()\n!pip install numpy\nf()"),
    ("jsonc", '{"a": 1, // the answer\n "b": 2}'), ("json", '{"a": 1,\n ...\n}'),
    ("rust", "fn f<'a>(x: &'a str) -> &'a str { x }"), ("zsh", "if [ -f x ]; then echo (; fi"),
    ("swift", 'let s = """\nhe said "hi" (\n"""'),
])
def test_code_that_parses_or_is_not_checked(lang, body):
    assert "code-syntax" not in symptoms(f"```{lang}\n{body}\n```", prompt="Code?")


# --- endings -------------------------------------------------------------------------------------

def test_empty_and_unexplained_endings():
    assert symptoms("", finish_reason="stop") == ["empty"]
    assert symptoms("A partial answer.", finish_reason=None) == ["truncated-without-reason"]
    assert symptoms("A partial answer.", finish_reason="abort") == ["truncated-without-reason"]
    assert symptoms("partial", finish_reason="length", completion_tokens=3, max_tokens=64) == ["truncated-without-reason"]
    assert detect("a full answer", finish_reason="length", completion_tokens=64, max_tokens=64) == []


def test_a_length_stop_at_the_servers_context_window_is_not_blamed_on_the_model():
    kw = dict(finish_reason="length", completion_tokens=900, max_tokens=1024)
    assert symptoms("cut by the window", **kw) == ["truncated-without-reason"]
    assert detect("cut by the window", context_limited=True, **kw) == []
    assert detect("cut by the window", max_model_len=1024, prompt_tokens=124, **kw) == []
    assert symptoms("cut early", max_model_len=4096, prompt_tokens=124, **kw) == ["truncated-without-reason"]


@pytest.mark.parametrize("text", [
    "Maria takes 8 apples, leaving 16. Tom then takes 5 of the",
    "Regular exercise strengthens the heart, improves sleep,",
    "The side of Earth facing the Moon is pulled toward",
    "Here is the function:\n\n```python\ndef f(x):\n    return",
    "机器学习是人工智能的一个分支，它让计算机从数据中学习规律，并且",
    "The answer depends on the size of the input (see the note below",
    "Leaves change colour because chlorophyll breaks down and the other pigments in the leaf show through",
])
def test_a_stop_in_the_middle_of_a_sentence(text):
    assert "stopped-mid-sentence" in symptoms(text, prompt="?", finish_reason="stop")


@pytest.mark.parametrize("text", [
    "The maples burn in quiet red\nThe river hums a cooler tune\nThe geese write letters overhead",
    "- apples\n- pears", "| a | b |\n|---|---|\n| 1 | 2 |", "Canberra", "## Summary",
    "The result is $x = 3$", "```python\nprint(1)\n```", "The interval is [0, 1).", "Done! 🚀",
])
def test_endings_that_can_end(text):
    assert "stopped-mid-sentence" not in symptoms(text, prompt="?", finish_reason="stop")


def test_detect_keeps_its_original_keywords():
    assert detect("Fine answer.", prompt="?", finish_reason="stop", completion_tokens=3, max_tokens=64,
                  allowed_scripts={"cyrillic"}, allow_html=False) == []
    assert detect("Fine, ответ.", prompt="?", allowed_scripts={"cyrillic"}) == []
    assert detect("Use <div> here.", prompt="?", allow_html=True) == []


def test_the_tiny_model_rule():
    first = tinymodel.next_token(5)
    good = [first, tinymodel.next_token(first), tinymodel.next_token(tinymodel.next_token(first))]
    assert rule_findings(5, good) == []
    bad = rule_findings(5, [good[0], good[2], good[1]])
    assert len(bad) == 1 and bad[0].detail.startswith("2/3 tokens break the rule; first at 1")
