"""known_issues.toml: the table loads and covers issue 17's reports, each answer the image claims is in effect
(and the test fails when it is removed), the refusals are one line and exit 2, prove's judgement fails a hit."""

import json
import re

import pytest

from dsv4_images import REPO_ROOT, known_issues, matrix
from dsv4_images.errors import UserError
from dsv4_images.in_image import entrypoint as ep
from dsv4_images.prove import engine
from dsv4_images.prove.report import Report

M = matrix.load()
TABLE = known_issues.load()
ISSUE_17 = ["flashinfer#4919", "vllm#43455", "sglang#34340", "vllm#41044", "vllm#40269", "rejection_sample_method",
            "vllm#45425", "vllm#49891", "vllm#51593", "vllm#51538", "vllm#40800", "vllm#40801", "vllm#53227",
            "vllm#54686", "vllm#45862", "vllm#53411", "flashinfer#3197", "flashinfer#3227", "vllm#41524"]


def command(target: str, env: dict | None = None, argv: list[str] | None = None) -> list[str]:
    defaults = json.loads(json.dumps(M.resolve(target).serve_defaults()))
    return ep.build_command(ep.effective_settings(defaults, env or {}), argv or [])


def spec_of(cmd: list[str]) -> dict:
    return json.loads(cmd[cmd.index("--speculative-config") + 1])


def test_the_table_covers_issue_17_with_evidence_and_a_test_per_answer():
    reports = " ".join(r for i in TABLE.issues for r in i.reports)
    assert [r for r in ISSUE_17 if r not in reports] == []
    for issue in TABLE.issues:
        # at least one file:line in the pinned sources, unless the row says why none can be given
        assert any(re.search(r"\.(py|toml)[:\] ]", e) or "not decidable" in e for e in issue.evidence), issue.id
        if issue.answer != "none":
            path, _, name = issue.test.partition("::")
            assert (REPO_ROOT / path).is_file(), issue.test
            assert not name or f"def {name}(" in (REPO_ROOT / path).read_text(), issue.test


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.replace('test = "tests/unit/test_known_issues.py::test_the_mtp_moe_steering_is_in_every_sm100_command"\n', ""),
     "issues[0]: Value error, answer 'steering' needs a test that fails without it"),
    (lambda s: s.replace('answer = "steering"', 'answer = "hope"'), "issues[0].answer:"),
    (lambda s: s.replace('symptom = "B300', 'symptm = "B300'), "issues[0].symptom: missing"),
    (lambda s: s.replace('broken = ["FLASHINFER_TRTLLM"]', 'broken = ["FLASHINFER_TRTLLM"], allowed = ["TRITON"]'),
     "give exactly one of broken or allowed"),
    (lambda s: s.replace('id = "draft-sample-greedy"', 'id = "mtp-moe-trtllm-sm103"'), "appears twice"),
    (lambda s: s + "\n[[issues\n", "not valid TOML"),
])
def test_a_malformed_table_is_one_line(tmp_path, edit, message):
    path = tmp_path / "known_issues.toml"
    path.write_text(edit(known_issues.PATH.read_text()))
    with pytest.raises(UserError) as err:
        known_issues.load(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_readme_table_is_rendered_from_the_file():
    readme = (REPO_ROOT / "README.md").read_text()
    assert known_issues.readme_with_table(readme, TABLE) == readme
    assert all(f"`{i.id}`" in readme for i in TABLE.issues)
    with pytest.raises(UserError, match="markers"):
        known_issues.readme_with_table(readme.replace(known_issues.END, ""), TABLE)


@pytest.mark.parametrize("env,argv", [({}, []), ({"NUM_SPECULATIVE_TOKENS": "1"}, []), ({"TENSOR_PARALLEL_SIZE": "8"}, []),
                                      ({}, ["--moe-backend", "flashinfer_trtllm"])])
def test_the_mtp_moe_steering_is_in_every_sm100_command(env, argv):
    """flashinfer#4919: the draft's MoE backend is Triton on sm100 whatever the target's --moe-backend; sm120
    (no TRT-LLM MoE) leaves it to vLLM."""
    assert spec_of(command("sm100", env, argv))["moe_backend"] == "triton"
    assert spec_of(command("sm120", env, argv))["moe_backend"] == "auto"


@pytest.mark.parametrize("target", ["sm100", "sm120"])
def test_serve_defaults_carry_each_speculative_answer(target):
    cmd = command(target)
    assert spec_of(cmd)["draft_sample_method"] == "probabilistic"  # vllm#41044: 0.33.0 defaults to greedy
    assert cmd[cmd.index("--tool-strict-level") + 1] == "function"  # grammar for tool_choice=auto (vllm#40801)
    assert "--speculative-config" not in command(target, {"NUM_SPECULATIVE_TOKENS": "0"})


@pytest.mark.parametrize("env,argv", [
    ({}, ["--speculative-config.rejection_sample_method", "synthetic"]),
    ({}, ["--speculative-config.rejection_sample_method=fly"]),
    ({}, ["--speculative-config", '{"method":"mtp","num_speculative_tokens":2,"rejection_sample_method":"synthetic"}']),
    ({"VLLM_EXTRA_ARGS": "--speculative-config.rejection_sample_method synthetic"}, []),
])
def test_the_entrypoint_refuses_lossy_rejection_sampling(tmp_path, capsys, env, argv):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(M.resolve("sm100").serve_defaults()))
    assert ep.main(["--print-command", *argv], env, path) == 2
    err = capsys.readouterr().err.strip()
    assert "rejection_sample_method=" in err and "is refused" in err and len(err.splitlines()) == 1
    assert ep.main(["--print-command", "--speculative-config.rejection_sample_method", "standard"], {}, path) == 0


def test_the_entrypoint_refuses_dcp_with_mtp(tmp_path, capsys):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(M.resolve("sm100").serve_defaults()))
    for argv in (["-dcp", "2"], ["--decode-context-parallel-size=4"]):
        assert ep.main(["--print-command", *argv], {}, path) == 2
        err = capsys.readouterr().err.strip()
        assert "vllm#45425" in err and len(err.splitlines()) == 1
    assert ep.main(["--print-command", "-dcp", "2"], {"NUM_SPECULATIVE_TOKENS": "0"}, path) == 0
    assert ep.main(["--print-command", "-dcp", "1"], {}, path) == 0


PICKED = {"nvfp4_moe_backend": "FLASHINFER_TRTLLM", "mtp_moe_backend": "TRITON", "draft_sample_method": "probabilistic",
          "rejection_sample_method": "standard", "cudagraph_mode": "FULL_AND_PIECEWISE", "draft_cudagraph_mode": "PIECEWISE",
          "mtp_with_dcp": "no", "tool_strict_level": "function", "flashinfer_autotune": True}


@pytest.mark.parametrize("capability,change,fails", [
    ("10.3", {}, []),
    ("10.3", {"mtp_moe_backend": "FLASHINFER_TRTLLM"}, ["known.mtp-moe-trtllm-sm103@10.3"]),
    ("10.0", {"mtp_moe_backend": "FLASHINFER_TRTLLM"}, []),  # the row names 10.3 only
    ("10.0", {"draft_sample_method": "greedy"}, ["known.draft-sample-greedy@10.0"]),
    ("10.0", {"rejection_sample_method": "synthetic"}, ["known.rejection-synthetic@10.0"]),
    ("10.0", {"mtp_with_dcp": "yes"}, ["known.mtp-dcp-full-graphs@10.0"]),
    ("10.0", {"tool_strict_level": None}, ["known.dsml-leak@10.0", "known.grammar-auto-non-strict@10.0"]),
    ("10.3", {"mtp_moe_backend": "error: ValueError: not supported"}, ["known.mtp-moe-trtllm-sm103@10.3"]),
])
def test_prove_fails_a_pick_the_table_marks_broken(capability, change, fails):
    report = Report("sm100")
    engine.judge_known(report, TABLE, "sm100", capability, {**PICKED, **change})
    assert [line.name for line in report.lines if line.status == "FAIL"] == fails
    assert report.lines[0].status == "INFO" and "BF16 MTP experts" in report.lines[0].detail
