"""The principles changed after held-out v1: each on cases either side of its line (none copied from a labelled set)."""

import json
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT
from dsv4_images.verify import evaluate
from dsv4_images.verify.corruption import STREAM_SYMPTOMS, UNKNOWN, detect
from dsv4_images.verify.detectors import encoding, shell, sql


def symptoms(text, **kw):
    return [f.symptom for f in detect(text, **kw)]


# --- the finish reason: sent, missing from the stream, or not recorded ---------------------------------------------

def test_a_stream_without_finish_reason_is_a_stream_failure_and_an_unrecorded_one_is_unknown():
    done = "The tide rises twice a day because the Moon pulls on the oceans."
    missing = detect(done, finish_reason=None)
    assert [f.symptom for f in missing] == ["truncated-without-reason"] and "stream" in missing[0].detail
    assert missing[0].symptom in STREAM_SYMPTOMS
    assert detect(done, finish_reason=UNKNOWN) == []
    cut = "The tide rises twice a day because the Moon pulls on the oceans. The Sun adds a smaller pull, which"
    assert symptoms(cut, finish_reason=UNKNOWN) == ["stopped-mid-sentence"]        # unknown excuses no cut


def test_a_length_stop_is_excused_only_when_the_counts_show_the_callers_limit():
    cut = "Bridges carry roads over rivers. The oldest stone arches still stand in Rome, and many of them are"
    assert detect(cut, finish_reason="length", completion_tokens=32, max_tokens=32) == []
    assert symptoms(cut, finish_reason="length") == ["stopped-mid-sentence"]        # no counts: nothing excuses it
    assert detect(cut, finish_reason="length", context_limited=True) == []
    assert detect("A complete sentence.", finish_reason="length") == []


def test_evaluate_reads_null_as_unknown_and_finish_reason_missing_as_a_stream_failure(tmp_path):
    base = {"id": "a", "lang": "en", "prompt": "?", "answer": "A complete answer.", "label": "clean"}
    assert evaluate.judge({**base, "finish_reason": None}).findings == []
    assert evaluate.judge(base).findings == []                                      # absent: not recorded either
    assert evaluate.judge({**base, "finish_reason": None, "finish_reason_missing": True}).flagged
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"items": [{**base, "finish_reason": "stop", "finish_reason_missing": True}]}))
    result = subprocess.run([sys.executable, "-m", "dsv4_images.verify.evaluate", str(path)], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "contradicts" in result.stderr


# --- endings ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "周末可以去郊外走走，看看油菜花，拍几张照片，晚上回城吃一顿火锅，犒劳一下自己 🌼🍲",
    "Pack light, start early, and do not forget to look up now and then 🏔️",
    "1. Preheat the oven.\n2. Mix the batter.\n3. Bake for 25 minutes.\n4. More recipes: https://example.org/cakes",
    "Steps:\n- open the settings\n- choose Display\n- turn on night mode for the evening hours",
    "此致\n敬礼\n\n学生 小王",
])
def test_endings_that_close(text):
    assert "stopped-mid-sentence" not in symptoms(text, prompt="?")


@pytest.mark.parametrize("text", [
    "1. Rinse the rice.\n2. Soak it for 20 minutes.\n3. Cook it with 1.2 times its volume of water for about",
    "1. 米洗净。\n2. 浸泡二十分钟。\n3. 大火煮开后转小火焖十五分钟，关火后再等",
    "《秋夜》\n\n凉风入窗来，\n灯下读旧书",
    "The heart pumps blood through two circuits. The right side sends it to the lungs, while the left side",
    "**注意**：新手最容易犯的错误是火太大、油太少，导致锅底粘连，所以一开始最好用中小火并且",
])
def test_endings_that_stop_mid_sentence(text):
    assert "stopped-mid-sentence" in symptoms(text, prompt="?")


# --- bytes: mojibake needs positive evidence, U+FFFD and samples in quotes or code are named -------------------------

def test_ordinary_chinese_is_never_mojibake_however_it_re_reads():
    for text in ("长期透支会让人疲惫，微小的进步也值得，准时优先，熬夜追剧不好。",
                 "氦、氖、氩是稀有气体；寻寻觅觅，冷冷清清，凄凄惨惨戚戚。",
                 "機器學習是人工智慧的一個分支。", "機械学習はデータから学ぶ技術です。"):
        assert "mojibake" not in symptoms(text, prompt="?")
    assert encoding.rarity("的") == 0 and encoding.rarity("锟") == 1 and encoding.rarity("鏈") == 2


def test_utf8_read_as_gbk_is_mojibake_unless_shown_as_a_sample():
    garbled = "今天的任务是整理文档".encode().decode("gbk", errors="ignore")
    assert "mojibake" in symptoms(f"结论：{garbled}。", prompt="?")
    assert "mojibake" in symptoms("页面显示锟斤拷。", prompt="?")
    assert "mojibake" not in symptoms(f"乱码 `{garbled}` 和“锟斤拷”都是编码错误的样子。", prompt="为什么会乱码？")
    assert "mojibake" not in symptoms('In Windows-1252, é shows as "Ã©".', prompt="Why?")


def test_replacement_char_named_in_code_or_quotes_but_not_glued_to_letters():
    assert "replacement-char" not in symptoms("Invalid bytes become `�` or \"�\" when decoded.", prompt="What is this?")
    assert "replacement-char" in symptoms("The capital is Ber�n.", prompt="?")
    assert "replacement-char" in symptoms("Run `pip inst�all numpy` first.", prompt="?")
    assert "replacement-char" in symptoms("```python\npri�nt(1)\n```", prompt="?")
    assert "replacement-char" not in symptoms("That symbol (�) means bad bytes.", prompt="What is � ?")


def test_byte_level_newline_marker_after_punctuation_but_not_maltese():
    assert "bpe-marker" in symptoms("Boil the water.ĊAdd the pasta.", prompt="?")
    assert "bpe-marker" in symptoms("Step one.Ċ2. Step two.", prompt="?")
    assert "bpe-marker" not in symptoms("Iċ-Ċentru huwa magħluq. The marker \"Ċ\" is a newline.", prompt="Maltese?")


def test_special_tokens_named_in_quotes_are_not_leaks():
    assert detect('The model ends a turn with "<|im_end|>" in ChatML.', prompt="How does ChatML end a turn?") == []
    assert "special-token" in symptoms("The turn ends here.<|im_end|>", prompt="?")


# --- repetition, dropped words, stray words, salad -------------------------------------------------------------------

def test_a_paragraph_said_twice_is_repetition_but_a_refrain_is_not():
    para = ("Compound interest pays interest on the interest already earned, so savings grow faster every year "
            "the money stays invested.")
    assert "repetition" in symptoms(f"{para}\n\nStart early if you can.\n\n{para}", prompt="?")
    stanza = "Row, row, row the boat,\nacross the silver bay,\nthe moon will light the way."
    assert "repetition" not in symptoms(f"{stanza}\n\nWe sing it once again:\n\n{stanza}", prompt="A song?")


@pytest.mark.parametrize("text", [
    "To undo the last commit, run git reset and keep the. Your files stay as they were.",
    "Electric cars cost less to run than. They also need less maintenance.",
    "Water boils at at 100 degrees at sea level.",
    "锻炼能改善睡眠，由于，压力也会下降。",
    "这种材料叫做“”，常用于建筑。",
])
def test_a_word_the_grammar_needs_is_missing(text):
    assert "dropped-word" in symptoms(text, prompt="?")


@pytest.mark.parametrize("text", [
    "She had had a long day, and that that mattered surprised nobody.",
    "Which folder did the file come from? Tell me what it is made of.",
    "Use \"an\" before vowel sounds and \"the\" for a known thing; either/or.",
    "书名要加书名号《》，引号“”用来标示引用。",
])
def test_grammatical_text_is_not_a_dropped_word(text):
    assert "dropped-word" not in symptoms(text, prompt="?")


@pytest.mark.parametrize("text", ["这个方法 very 简单，一看就会。", "先加盐，再 wieder 搅拌均匀。", "水开后 avec 转小火。"])
def test_a_stray_function_word_of_a_latin_language_in_chinese(text):
    assert "script-mixing" in symptoms(text, prompt="怎么做？", lang="zh")


@pytest.mark.parametrize("text, prompt", [
    ("用 git 提交时先 add 再 commit，最后 push。", "git 怎么用？"),
    ("法语 avec 的意思是“和、带着”。", "avec 是什么意思？"),
    ("the 是定冠词，a 是不定冠词。", "英语的冠词有哪些？"),
    ("可以听 The Beatles 的歌。", "推荐乐队。"),
])
def test_terms_and_discussed_words_in_chinese_are_not_strays(text, prompt):
    assert "script-mixing" not in symptoms(text, prompt=prompt, lang="zh")


def test_chinese_words_spaced_apart_around_lone_particles_are_salad():
    assert "token-salad" in symptoms("最后 电视 的 跑步 了 被 桌子 呢 明天 地。", prompt="怎么办？", lang="zh")
    assert "token-salad" not in symptoms("关键词：云计算 大数据 物联网 区块链 人工智能 边缘计算", prompt="关键词？", lang="zh")
    assert "token-salad" not in symptoms("常见助词：的 地 得 了 着 过 呢 吗。", prompt="助词？", lang="zh")


# --- code: SQL no dialect accepts, bash -n ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "SELECT TOP 5 [name] FROM [dbo].[t] ORDER BY [score] DESC;",
    "SELECT id::text FROM t WHERE name ILIKE 'a%' AND d > now() - INTERVAL '7 days';",
    "SELECT * FROM t WHERE d >= DATE_SUB(NOW(), INTERVAL 7 DAY) LIMIT 5, 10;",
    "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;",
    "SELECT CASE WHEN a > 1 THEN 'big' ELSE 'it''s small' END AS size FROM t; -- done",
])
def test_sql_of_any_dialect_parses(body):
    assert sql.check(body) is None


@pytest.mark.parametrize("body", [
    "SELECT a, b, FROM t;", "SELECT a FROM t ORDER BY a,;", "SELECT * FROM t WHERE a = ;",
    "SELECT COUNT(* FROM t;", "SELECT 'x FROM t;", "SELECT a FROM t GROUP BY ORDER BY a;",
])
def test_sql_no_dialect_accepts(body):
    assert sql.check(body) is not None
    assert "code-syntax" in symptoms(f"```sql\n{body}\n```", prompt="SQL?")


def test_sqlite_blocks_go_through_sqlites_parser_syntax_errors_only():
    assert sql.check_sqlite("CREATE TABLE n (id INTEGER PRIMARY KEY, body TEXT NOT NULL\n created TEXT);")
    assert sql.check_sqlite("SELECT * FROM no_such_table; -- a missing table is not a syntax error") is None


@pytest.mark.skipif(shell.available() is None, reason="bash not installed: shell blocks are not checked")
def test_bash_blocks_must_parse_with_bash_n():
    assert shell.check('for f in *.log; do\n  gzip "$f"\n', "bash")
    assert shell.check('if [ -f x ]\n  echo hi\nfi\n', "sh")
    assert shell.check("ssh <user>@<host>\nexport TOKEN=<your-token>\n", "bash") is None
    assert shell.check("$ ls\n(output) not shell\n$ echo ok\n", "console") is None
    assert shell.check("(venv) $ pip install -r requirements.txt\n", "bash") is None


def test_without_bash_shell_blocks_are_not_checked(monkeypatch):
    monkeypatch.setattr(shell.shutil, "which", lambda name: None)
    assert shell.available() is None
    assert shell.check('for f in *.log; do\n  gzip "$f"\n', "bash") is None
