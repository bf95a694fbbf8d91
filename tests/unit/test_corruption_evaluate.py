"""The evaluation command: figures per kind, misses listed, bad input as one line."""

import json
import subprocess
import sys

import pytest

from dsv4_images import REPO_ROOT
from dsv4_images.verify import evaluate


def run(*args):
    return subprocess.run([sys.executable, "-m", "dsv4_images.verify.evaluate", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True)


def item(id, label, answer, kind="k", **extra):
    return {"id": id, "lang": "en", "prompt": "How many apples are left?", "answer": answer, "finish_reason": "stop",
            "label": label, "kind": kind, "why": "test", **extra}


def test_figures_misses_and_false_positives(tmp_path):
    items = [item("caught", "corrupted", "There are 11<|im_end|> apples."),
             item("wrong", "corrupted", "There are 12 apples.", kind="wrong", expected={"number": 11}),
             item("missed", "corrupted", "There are eleven apples, I think."),
             item("fine", "clean", "There are 11 apples.", expected={"number": 11}),
             item("flagged", "clean", "There are 11 apples, затем.")]
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"items": items}))
    result = run(path, "--json", tmp_path / "out.json")
    assert result.returncode == 0, result.stderr
    assert "corrupted detected: 2/3 (66.7%)" in result.stdout
    assert "clean flagged (false positives): 1/2 (50.0%)" in result.stdout
    assert "missed (1):\n  missed [k]" in result.stdout and "flagged [k]: script-mixing" in result.stdout
    figures = json.loads((tmp_path / "out.json").read_text())
    assert figures["misses"] == ["missed"] and list(figures["false_positives"]) == ["flagged"]
    assert figures["per_kind"]["corrupted/wrong"] == "1/1 (100.0%)"


@pytest.mark.parametrize("content, message", [
    ("not json", "not UTF-8 JSON"),
    ('{"items": []}', "at least one item"),
    ('{"items": [{"id": "a"}]}', "missing prompt, answer, label"),
    ('{"items": [{"id": "a", "prompt": "p", "answer": "a", "label": "bad"}]}', "label must be one of"),
    ('{"items": [{"id": "a", "prompt": "p", "answer": "a", "label": "clean", "expected": {"nmber": 1}}]}',
     "unknown answer check(s): nmber"),
    ('{"items": [{"id": "a", "prompt": "p", "answer": "a", "label": "clean", "expected": {"regex": "(["}}]}',
     "bad answer check"),
    ('{"items": [{"id": "a", "prompt": "p", "answer": "a", "label": "clean", "expected": {"bullets": "3"}}]}',
     "bullets must be an integer"),
    ('{"items": [{"id": "a", "prompt": "p", "answer": "a", "label": "clean", "lang": 7}]}', "lang and finish_reason"),
    ('{"items": [{"id": "a", "prompt": "p", "answer": "a", "label": "clean", "max_tokens": "64"}]}',
     "max_tokens must be an integer"),
])
def test_bad_input_is_one_line(tmp_path, content, message):
    path = tmp_path / "set.json"
    path.write_text(content)
    result = run(path)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_missing_file_is_one_line(tmp_path):
    result = run(tmp_path / "absent.json")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot read")


def test_judge_passes_the_optional_fields_on():
    cut = item("cut", "clean", "The story goes on and", finish_reason="length", completion_tokens=900,
               max_tokens=1024, context_limited=True)
    assert evaluate.judge(cut).flagged is False
    assert evaluate.judge({**cut, "context_limited": None}).flagged is True
