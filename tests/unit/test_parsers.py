"""vLLM 0.33.0's own `deepseek_v4` reasoning and tool-call parsers, as the image installs them (prove's venv: the sm
lock, the vLLM wheel, our patch series applied), over DeepSeek-V4 outputs in the DSML format
(tests/fixtures/parsers/dsml_corpus.json, PROVENANCE.md there), whole and streamed in many chunkings. The parsers run
in prove's venv through tests/support/dsv4_parsers_worker.py, the way `vllm serve --enable-auto-tool-choice
--tool-call-parser deepseek_v4 --reasoning-parser deepseek_v4 --tokenizer-mode deepseek_v4` drives them.

Asserted for every case and chunking: tool calls come out as structured calls whose arguments parse as JSON and
equal what the output encodes (streamed equal to whole); no DSML markup (`｜DSML｜`, `<｜`) in content or reasoning;
a tool call written inside reasoning comes back as a tool call. Patch 0003 is shown to be needed by running the
pristine files the prove environment keeps."""

import json
import subprocess
import time

import pytest

from dsv4_images import REPO_ROOT, matrix
from dsv4_images.errors import UserError
from dsv4_images.prove import env, settings
from tests.conftest import need

pytestmark = [pytest.mark.network, pytest.mark.slow]
CORPUS = json.loads((REPO_ROOT / "tests" / "fixtures" / "parsers" / "dsml_corpus.json").read_text())["cases"]
WORKER = REPO_ROOT / "tests" / "support" / "dsv4_parsers_worker.py"
CHUNKINGS = {"groups": [2, 3], "seeds": [0, 1, 2, 3, 4], "max_group": 8}
MARKUP = ("｜DSML｜", "<｜")
# The modules patch 0003 changes, in import order (the worker loads them from the pristine copies).
PATCHED = {"vllm.parser.deepseek_v4": "vllm/parser/deepseek_v4.py",
           "vllm.reasoning.deepseek_v4_engine_reasoning_parser": "vllm/reasoning/deepseek_v4_engine_reasoning_parser.py",
           "vllm.tool_parsers.deepseekv4_engine_tool_parser": "vllm/tool_parsers/deepseekv4_engine_tool_parser.py"}
# Outputs cut inside the tool-call start tag, and where 0.33.0 without 0003 puts the cut-off tag.
CUT_TAG = {"truncated-in-tool-calls-tag": "content", "truncated-in-tool-calls-tag-inside-reasoning": "reasoning"}


@pytest.fixture(scope="module")
def prove_env():
    pt = settings.from_target(matrix.load().resolve("sm120"))
    try:
        env.find_python(pt.python)
    except UserError as exc:
        need(False, str(exc))
    return env.ensure(pt, progress=lambda _: None)


def run_worker(prove_env, tmp_path, cases, **extra) -> dict:
    request, result = tmp_path / "request.json", tmp_path / "result.json"
    request.write_text(json.dumps({"cases": cases, "chunkings": CHUNKINGS, **extra}, ensure_ascii=False))
    done = subprocess.run([str(prove_env.python), str(WORKER), str(request), str(result)], capture_output=True,
                          text=True, env=prove_env.run_env(), timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result.read_text())


@pytest.fixture(scope="module")
def results(prove_env, tmp_path_factory, report):
    started = time.monotonic()
    data = run_worker(prove_env, tmp_path_factory.mktemp("parsers"), CORPUS)
    report["parsers_seconds"] = round(time.monotonic() - started, 1)
    report["parsers_streams"] = sum(len(c["streamed"]) for c in data["cases"])
    return data


def calls(result: dict) -> list[tuple[str, object]]:
    return [(c["name"], json.loads(c["arguments"])) for c in result["tool_calls"]]


def leaks(result: dict) -> list[str]:
    return [f"{field}: {text[-80:]!r}" for field in ("content", "reasoning")
            if (text := result[field] or "") and any(m in text for m in MARKUP)]


def test_the_parsers_are_the_serving_layers(results):
    assert results["vllm"] == "0.33.0"
    assert (results["reasoning_parser"], results["tool_parser"]) == ("DeepSeekV4ParserReasoningAdapter",
                                                                     "DeepSeekV4EngineToolParser")
    names = [c["name"] for c in results["cases"]]
    assert names == [c["name"] for c in CORPUS] and len(names) == len(set(names))
    assert all(len(c["streamed"]) >= 9 for c in results["cases"]), {c["name"]: list(c["streamed"]) for c in
                                                                     results["cases"]}


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_whole_and_every_chunking(case, results):
    got = next(c for c in results["cases"] if c["name"] == case["name"])
    assert "error" not in got, got.get("traceback")
    expected = case["expected"]
    want = [(c["name"], c["arguments"]) for c in expected["tool_calls"]]
    runs = {"whole": got["whole"], **got["streamed"]}
    for name, result in runs.items():
        assert "error" not in result, (name, result.get("traceback"))
        assert not leaks(result), (name, leaks(result))
        if case.get("truncated"):
            # Cut inside a call: whatever it returns is named as the whole parse names it; the arguments of a
            # call cut inside a value are not asserted (whole returns {}, streamed the JSON prefix so far), and
            # a call cut inside its name comes back under the cut name ("get_wea"), as in 0.33.0.
            assert [c["name"] for c in result["tool_calls"]] == [c["name"] for c in got["whole"]["tool_calls"]], name
            assert name == "whole" or result["finish_reason"] == "length", name  # a cut call is not reported complete
            continue
        assert calls(result) == want, name
        assert (result["reasoning"] or "").strip() == expected["reasoning"].strip(), name
        assert (result["content"] or "").strip() == expected["content"].strip(), name
        if name != "whole":
            assert all(len(c["ids"]) == 1 for c in result["tool_calls"]), name
            assert result["finish_reason"] == ("tool_calls" if want else "stop"), name


def test_patch_0003_is_needed(prove_env, results, tmp_path):
    """Without 0003 (the pristine files), an output cut inside the tool-call start tag ends content (after
    </think>) or reasoning (before it) with the cut-off tag, whole and in every chunking; with it, none does."""
    cases = [c for c in CORPUS if c["name"] in CUT_TAG]
    pristine = run_worker(prove_env, tmp_path, cases,
                          override={m: str(prove_env.pristine / f) for m, f in PATCHED.items()})
    for got in pristine["cases"]:
        field = CUT_TAG[got["name"]]
        runs = {"whole": got["whole"], **got["streamed"]}
        assert len(runs) >= 9, got["name"]
        assert all((r[field] or "").endswith("<｜DSML｜tool_ca") for r in runs.values()), (got["name"], runs)
    for got in (c for c in results["cases"] if c["name"] in CUT_TAG):
        assert not any(leaks(r) for r in [got["whole"], *got["streamed"].values()]), got["name"]


@pytest.mark.parametrize("request_text", ['{"cases": 3}', "not json", '{"cases": [{"name": "x"}]}'])
def test_a_bad_request_is_one_line_and_exit_2(prove_env, tmp_path, request_text):
    bad = tmp_path / "bad.json"
    bad.write_text(request_text)
    done = subprocess.run([str(prove_env.python), str(WORKER), str(bad), str(tmp_path / "out.json")],
                          capture_output=True, text=True, env=prove_env.run_env())
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("dsv4_parsers_worker: ") and not (tmp_path / "out.json").exists()


def test_the_committed_corpus_is_what_the_encoding_renders(prove_env, tmp_path):
    out = tmp_path / "corpus.json"
    done = subprocess.run([str(prove_env.python), str(REPO_ROOT / "tests" / "fixtures" / "parsers" / "make_dsml_corpus.py"),
                           str(out)], capture_output=True, text=True, env=prove_env.run_env())
    assert done.returncode == 0, done.stderr[-2000:]
    committed = REPO_ROOT / "tests" / "fixtures" / "parsers" / "dsml_corpus.json"
    assert out.read_text() == committed.read_text(), "regenerate it with make_dsml_corpus.py (see PROVENANCE.md)"
