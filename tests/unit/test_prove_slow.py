"""build.py prove for real: prove's cached environment (the sm lock + the vLLM wheel + the CUDA 13.0
toolchain from PyPI, ~8 GB the first time), vLLM's engine config, vLLM's CMake configure, nvcc and
cuobjdump. Each check is shown to pass on what the matrix says and to fail on a broken input.
Timings go to reports/test-figures.json, never into assertions."""

import dataclasses
import json
import shutil
import subprocess
import sys
import time

import pytest

from dsv4_images import REPO_ROOT, matrix, patches
from dsv4_images.errors import UserError
from dsv4_images.prove import archs, engine, env, kernel, report, runtime, settings
from tests.conftest import need
from tests.support.prove_lines import assert_every_line_passes

pytestmark = [pytest.mark.network, pytest.mark.slow]
M = matrix.load()
TINY_CU = "__global__ void k(float *x) { x[threadIdx.x] *= 2.0f; }\n"


def target(name):
    return settings.from_target(M.resolve(name))


@pytest.fixture(scope="module")
def prove_env():
    pt = target("sm120")
    try:
        env.find_python(pt.python)
    except UserError as exc:
        need(False, str(exc))
    return env.ensure(pt, progress=lambda _: None)


def test_prove_passes_end_to_end(tmp_path, report):
    """`build.py prove --arch sm100` as a user runs it: every line passes on the committed matrix. sm120's runs in
    tests/integration/test_sm_image.py, with --image: the same venv steps and the image it builds."""
    out = tmp_path / "sm100.json"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "build.py", "prove", "--arch", "sm100", "--report", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    data = json.loads(out.read_text())
    report["prove_sm100_seconds"] = {"wall": round(time.monotonic() - started, 1), **data["steps_seconds"]}
    assert result.returncode == 0, result.stdout[-3000:]
    assert_every_line_passes(data, target("sm100"))


def test_a_refused_setting_and_a_series_without_0001_fail(prove_env, tmp_path, report):
    pt = target("sm120")
    tree = shutil.copytree(prove_env.pristine, tmp_path / "tree")
    without_0001 = [(p.name, p) for p in (REPO_ROOT / f for f, _ in pt.patches) if not p.name.startswith("0001")]
    patches.apply_series(pt.target, tree, patch_files=without_0001)
    source = tree / "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py"
    r = report_for(pt)
    started = time.monotonic()
    engine.run(r, prove_env, pt, [engine.Case("default"), engine.Case("your settings", {"KV_CACHE_DTYPE": "fp9"})],
               tmp_path, patched_source=source)
    report["prove_engine_two_cases_seconds"] = round(time.monotonic() - started, 1)
    lines = {x.name: x for x in r.lines}
    assert lines["engine.default"].status == "PASS"
    assert lines["engine.your settings"].status == "FAIL"
    assert "Invalid kv_cache_dtype: 'fp9'" in lines["engine.your settings"].detail
    assert lines["schemes.patch-0001"].status == "FAIL"
    assert "is_static_input_scheme None unpatched -> None patched" in lines["schemes.patch-0001"].detail
    assert lines["schemes.mtp-block"].status == "PASS"  # 0002 is installed in prove's venv


@pytest.mark.parametrize("built,verdict", [("sm_120f", "PASS"), ("sm_120a", "FAIL"), ("sm_100f", "FAIL")])
def test_an_object_of_the_wrong_arch_fails_the_sass_check(prove_env, tmp_path, built, verdict):
    src = tmp_path / "tiny.cu"
    src.write_text(TINY_CU)
    obj = tmp_path / "tiny.o"
    gencode = f"arch={built.replace('sm_', 'compute_')},code={built}"
    subprocess.run([str(prove_env.tool("nvcc")), "-c", "-gencode", gencode, str(src), "-o", str(obj)],
                   env=prove_env.run_env(), check=True, capture_output=True)
    r = report_for(target("sm120"))
    kernel.judge_sass(r, prove_env, obj, "sm_120f")
    assert r.lines[0].status == verdict and built in r.lines[0].detail


def test_a_runtime_with_compilers_gets_them_executed(prove_env, tmp_path):
    pt = target("sm120")
    full = dataclasses.replace(pt, runtime_packages=(*pt.runtime_packages, "build-essential", "python3.12-dev"))
    r = report_for(full)
    runtime.c_launcher(r, prove_env, full, tmp_path)
    runtime.nvcc_host_compiler(r, prove_env, full, tmp_path, "arch=compute_120f,code=sm_120f")
    assert [x.status for x in r.lines] == ["PASS", "PASS"], r.table()
    assert "cuInit answered 34" in r.lines[0].detail and (tmp_path / "trivial").is_file()


def report_for(pt):
    return report.Report(pt.name)



def test_a_configuration_the_table_marks_broken_fails_prove(prove_env, tmp_path):
    """known_issues.toml, executed on sm100's 10.0 and 10.3: the committed command passes every known.* line;
    a speculative config of the user's own replaces ours whole (greedy drafts again) and asks TRT-LLM for the
    draft's BF16 experts, which vLLM's oracle refuses for DeepSeek-V4's routing: both lines fail."""
    pt = target("sm100")
    r = report_for(pt)
    spec = '{"method":"mtp","num_speculative_tokens":2,"moe_backend":"flashinfer_trtllm"}'
    engine.run(r, prove_env, pt, [engine.Case("default"), engine.Case("your settings", args=["--speculative-config", spec])],
               tmp_path)
    status = {x.name: x.status for x in r.lines}
    for capability in ("10.0", "10.3"):
        assert [n for n, s in status.items() if n.startswith("known.") and n.endswith(f"@{capability}") and s != "PASS"] == []
        assert status[f"known.draft-sample-greedy@{capability} (your settings)"] == "FAIL"
    assert status["known.mtp-moe-trtllm-sm103@10.3"] == "PASS"
    assert status["known.mtp-moe-trtllm-sm103@10.3 (your settings)"] == "FAIL"
    picks = {x.name: x.detail for x in r.lines if x.name.startswith("picks@")}
    assert "BF16 MTP experts TRITON" in picks["picks@10.3"]
    assert "BF16 MTP experts error: ValueError" in picks["picks@10.3 (your settings)"]
