"""build.py prove, the parts that need no GPU environment: its checks can fail, and say why.
(test_prove_slow.py runs them for real: vLLM, CMake, nvcc.)"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT, matrix
from dsv4_images.errors import UserError
from dsv4_images.prove import archs, engine, kernel, report, runtime, settings, stub
from dsv4_images.prove.report import StepFailed

M = matrix.load()
SM100, SM120 = (settings.from_target(M.resolve(t)) for t in ("sm100", "sm120"))


def run_cli(*args):
    return subprocess.run([sys.executable, "build.py", "prove", *args], cwd=REPO_ROOT, capture_output=True, text=True)


def test_the_adapter_reads_each_sm_target_and_refuses_cpu():
    assert [d.capability for d in SM100.devices] == ["10.0", "10.3"] and SM100.kernel.sass == "sm_100f"
    assert [d.capability for d in SM120.devices] == ["12.0"] and SM120.kernel.sass == "sm_120f"
    assert (SM100.max_speculative_tokens, SM120.max_speculative_tokens) == (2, 1)
    assert "nvidia-cuda-nvcc" in SM120.toolchain and "vllm" not in SM120.toolchain
    with pytest.raises(UserError) as exc:
        settings.from_target(M.resolve("cpu"))
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("args,message", [
    (["--arch", "cpu"], "has no [targets.cpu.prove] table"),
    (["--arch", "sm120", "--env", "NOEQUALS"], "--env 'NOEQUALS': expected KEY=VALUE"),
    (["--arch", "sm120", "--steps", "env,compile"], "--steps 'env,compile': expected a comma-separated subset of"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip()[7:]}"] and message in result.stderr


def test_the_cases_cover_the_readme_overrides_and_the_refusals():
    ids = {c.id: c for c in engine.cases(SM120)}
    for env_var in ("TENSOR_PARALLEL_SIZE", "NUM_SPECULATIVE_TOKENS", "MAX_MODEL_LEN", "KV_CACHE_DTYPE", "MAX_NUM_SEQS",
                    "MAX_NUM_BATCHED_TOKENS", "PORT", "VLLM_EXTRA_ARGS"):
        assert any(env_var in c.env for c in ids.values() if c.expect == "accept"), env_var
    assert ids["NUM_SPECULATIVE_TOKENS=0"].check == {"num_speculative_tokens": 0, "speculative_method": None}
    refused = {c.id for c in ids.values() if c.expect == "reject"}
    assert refused == {"MAX_NUM_SEQS=4096 MAX_NUM_BATCHED_TOKENS=1024", "unknown flag --no-such-flag",
                       "MAX_MODEL_LEN=2097152", "KV_CACHE_DTYPE=fp9", "TENSOR_PARALLEL_SIZE=8"}
    assert {c.id for c in ids.values() if c.expect == "ours"} == {"NUM_SPECULATIVE_TOKENS=2",
                                                                 "--cudagraph-capture-sizes 3 5"}
    user = engine.cases(SM120, {"KV_CACHE_DTYPE": "fp9"}, ["--foo"])[-1]
    assert (user.id, user.env, user.args, user.expect) == ("your settings", {"KV_CACHE_DTYPE": "fp9"}, ["--foo"], "accept")


def test_the_commands_are_the_entrypoints_own():
    argv = engine.argv_for(SM120, engine.Case("x", {"NUM_SPECULATIVE_TOKENS": "0"}), Path("/m"))
    assert argv[:3] == ["vllm", "serve", "/m"] and "--speculative-config" not in argv
    assert argv[argv.index("--cudagraph-capture-sizes") + 1:][:4] == ["1", "2", "4", "8"]


CONFIG = {"num_speculative_tokens": 1, "speculative_method": "mtp", "cudagraph_capture_sizes": [2, 4, 8, 16],
          "kv_cache_dtype": "fp8", "max_model_len": 16384, "tensor_parallel_size": 2, "cudagraph_mode": "FULL",
          "moe_backend": "auto", "indexer_kv_dtype": "fp8", "block_size": 256, "max_num_seqs": 8}


def test_our_checks_refuse_what_vllm_accepts():
    assert engine.ours(CONFIG, ["--cudagraph-capture-sizes"], SM120) == []
    assert engine.ours({**CONFIG, "num_speculative_tokens": 2}, [], SM120) == [
        "ours: k=2 exceeds sm120's limit of 1 MTP tokens"]
    odd = engine.ours({**CONFIG, "cudagraph_capture_sizes": [2, 3, 5]}, ["--cudagraph-capture-sizes"], SM120)
    assert odd == ["ours: capture sizes [3, 5] are not multiples of k+1=2"]
    # sizes vLLM chose itself are not ours to judge (its V1 runner rounds them, see the worker's summary)
    assert engine.ours({**CONFIG, "cudagraph_capture_sizes": [1, 3]}, [], SM120) == []


def judged(case, outcome, argv=()):
    r = report.Report("sm120")
    engine.judge_case(r, case, outcome, list(argv), SM120)
    return r.lines[-1]


REFUSAL = {"ok": False, "stage": "create_engine_config", "raised_at": "x.py:1",
           "error": "CacheConfig: Invalid kv_cache_dtype: 'fp9'."}


def test_a_setting_vllm_refuses_fails_with_vllms_reason():
    line = judged(engine.Case("your settings", {"KV_CACHE_DTYPE": "fp9"}), REFUSAL)
    assert line.status == "FAIL" and "Invalid kv_cache_dtype: 'fp9'" in line.detail and "\n" not in line.detail
    assert judged(engine.Case("KV_CACHE_DTYPE=fp9", expect="reject"), REFUSAL).status == "PASS"
    accepted = {"ok": True, "config": CONFIG, "seconds": 1}
    assert judged(engine.Case("KV_CACHE_DTYPE=fp9", expect="reject"), accepted).status == "FAIL"
    wrong = judged(engine.Case("TP", check={"tensor_parallel_size": 4}), accepted)
    assert wrong.status == "FAIL" and "tensor_parallel_size=2 (asked 4)" in wrong.detail
    assert judged(engine.Case("NUM_SPECULATIVE_TOKENS=2", expect="ours"), accepted).status == "FAIL"


def schemes(pristine, patched, mtp_unquantized=True):
    fp8 = {"layer": "a", "scheme": "CompressedTensorsW8A8Fp8", "weight_block_size": [128, 128],
           "is_static_input_scheme": False}
    weight_only = {"layer": "a", "scheme": "CompressedTensorsW8A16Fp8"}
    return {"checkpoint": {"attention.wq_b": fp8, "experts.gate_proj": {"layer": "e", "scheme": "CompressedTensorsW4A4Fp4"},
                           "indexer": {"layer": "i", "scheme": None}},
            "weight_only_fp8": {"pristine": {"attention": {**weight_only, "is_static_input_scheme": pristine}},
                                "patched": {"attention": {**weight_only, "is_static_input_scheme": patched}}},
            "mtp": {"unquantized": mtp_unquantized, "how": "h",
                    "layers": {"attention.wq_b": {"layer": "m", "scheme": None if mtp_unquantized else "W8A8"}}}}


def test_the_scheme_lines_follow_the_patches():
    r = report.Report("sm120")
    engine.judge_schemes(r, schemes(None, False))
    assert r.ok and {x.name for x in r.lines} >= {"schemes.patch-0001", "schemes.mtp-block", "schemes.indexer"}
    r = report.Report("sm120")
    engine.judge_schemes(r, schemes(None, None, mtp_unquantized=False))
    failed = {x.name: x.detail for x in r.failed()}
    assert "None unpatched -> None patched" in failed["schemes.patch-0001"]
    assert "inherits the main quant config" in failed["schemes.mtp-block"]


OUTPUT = """-- [dsv4-prove] CUDA_ARCHS = '12.0'
-- [dsv4-prove] MARLIN_MOE_ARCHS = '12.0f'
-- [dsv4-prove] MARLIN_MOE_ARCHS = '12.0f'
-- something else
-- [dsv4-prove] FP4_SM100_ARCHS = ''
-- Not building SM10x/11x NVFP4/MXFP4 as no compatible archs were found.
"""


def configured(table):
    return archs.Configured(Path("/src"), Path("/build"), table, "cutlass x")


def test_the_arch_table_is_read_from_the_configure_output_and_a_changed_table_fails(tmp_path, monkeypatch):
    table = archs.table_from(OUTPUT)
    assert table == [("CUDA_ARCHS", "12.0"), ("MARLIN_MOE_ARCHS", "12.0f"), ("FP4_SM100_ARCHS", "-"),
                     (">", "Not building SM10x/11x NVFP4/MXFP4 as no compatible archs were found.")]
    monkeypatch.setattr(settings, "ARCHS_DIR", tmp_path)
    r = report.Report("sm120")
    archs.judge(r, SM120, configured(table), write=True)
    assert [x.status for x in r.lines] == ["PASS", "PASS"] and (tmp_path / "sm120.txt").is_file()
    changed = [("CUDA_ARCHS", "12.0"), ("MARLIN_MOE_ARCHS", "8.0+PTX"), *table[2:]]
    r = report.Report("sm120")
    archs.judge(r, SM120, configured(changed))
    assert [x.status for x in r.lines] == ["FAIL", "FAIL"]
    assert "MARLIN_MOE_ARCHS=12.0f, MARLIN_MOE_ARCHS=8.0+PTX" in r.lines[0].detail


def test_the_committed_tables_hold_the_expected_family_targets():
    sm120 = (REPO_ROOT / "archs" / "sm120.txt").read_text()
    sm100 = (REPO_ROOT / "archs" / "sm100.txt").read_text()
    for group in ("MARLIN_MOE_ARCHS", "FP4_SM120_ARCHS"):
        assert f"\n{group:<23}  12.0f\n" in sm120, group
    for group in ("FP4_SM100_ARCHS", "CUTLASS_MOE_DATA_ARCHS", "MLA_ARCHS"):
        assert f"\n{group:<23}  10.0f\n" in sm100, group


def test_the_configure_copy_is_cut_before_the_external_projects(tmp_path):
    (tmp_path / "CMakeLists.txt").write_text("a\ncuda_archs_loose_intersection(X_ARCHS ...)\n"
                                             f"{archs.CUT_MARKER}\ninclude(deepgemm.cmake)\n")
    assert archs.cut_cmakelists(tmp_path) == (2, ["CUDA_ARCHS", "X_ARCHS"])
    assert "deepgemm" not in (tmp_path / "CMakeLists.txt").read_text()
    (tmp_path / "CMakeLists.txt").write_text(f"{archs.CUT_MARKER}\ncuda_archs_loose_intersection(LATE_ARCHS ...)\n")
    with pytest.raises(StepFailed, match="after the external-projects cut"):
        archs.cut_cmakelists(tmp_path)
    (tmp_path / "CMakeLists.txt").write_text("project(vllm)\n")
    with pytest.raises(StepFailed, match="no longer has the line"):
        archs.cut_cmakelists(tmp_path)


@pytest.mark.parametrize("sass,family", [("sm_120f", "12.0f"), ("sm_100f", "10.0f"), ("sm_103a", "10.3a")])
def test_family_arch(sass, family):
    assert archs.family_arch(sass) == family


def test_a_wrong_arch_fails_the_sass_check(monkeypatch):
    r = report.Report("sm120")
    for found in ((["sm_120a"], []), (["sm_120f"], ["compute_120f"]), ([], []), (["sm_120f"], [])):
        monkeypatch.setattr(kernel, "sass_in", lambda env, obj, f=found: f)
        kernel.judge_sass(r, None, Path("k.o"), "sm_120f")
    assert [x.status for x in r.lines] == ["FAIL", "FAIL", "FAIL", "PASS"]


def test_a_runtime_without_host_compilers_fails_naming_the_packages(tmp_path):
    bare = dataclasses.replace(SM120, runtime_packages=(f"python{SM120.python}", "cuda-nvcc-13-0"))
    r = report.Report("sm120")
    runtime.c_launcher(r, None, bare, tmp_path)
    runtime.nvcc_host_compiler(r, None, bare, tmp_path, "arch=compute_120f,code=sm_120f")
    assert [x.status for x in r.lines] == ["FAIL", "FAIL"]
    assert "build-essential/gcc" in r.lines[0].detail and f"python{SM120.python}-dev" in r.lines[0].detail
    assert "build-essential/g++" in r.lines[1].detail


def test_prebuilt_flashinfer_modules_come_from_the_matrix(monkeypatch):
    monkeypatch.setattr(runtime, "spec_names", lambda env, pt, gens: {})
    backends = {"attention": "DeepseekV4FlashInferSM120Attention", "nvfp4_moe_first_supported": "FLASHINFER_CUTLASS"}
    r = report.Report("sm120")  # the matrix's [targets.sm120.flashinfer] modules: all three prebuilt
    runtime.flashinfer_modules(r, None, SM120, backends, "12.0")
    assert {x.name: x.status for x in r.lines} == {"runtime.flashinfer.sparse_mla_sm120@12.0": "PASS",
                                                   "runtime.flashinfer.fused_moe_120@12.0": "PASS",
                                                   "runtime.flashinfer.sampling@12.0": "PASS"}
    r = report.Report("sm120")  # an image that prebuilds nothing: every module a first request needs fails
    runtime.flashinfer_modules(r, None, dataclasses.replace(SM120, flashinfer_prebuilt=()), backends, "12.0")
    assert {x.status for x in r.lines} == {"FAIL"} and len(r.lines) == 3
    baked = dataclasses.replace(SM100, flashinfer_prebuilt=("fused_moe_trtllm_sm100", "sampling"),
                                flashinfer_cubins_baked=True)
    r = report.Report("sm100")
    runtime.flashinfer_modules(r, None, baked, {"attention": "DeepseekV4FlashMLAAttention",
                                                "nvfp4_moe_first_supported": "FLASHINFER_TRTLLM"}, "10.0")
    assert r.ok and "runtime.fetch.flashinfer-cubins.fused_moe_trtllm_sm100@10.0" in {x.name for x in r.lines}


def test_the_report_passes_only_when_every_line_does(tmp_path):
    r = report.Report("sm120")
    assert not r.ok  # an empty report proves nothing
    with r.step("one"):
        r.add("a", True, "fine")
        r.add("b", None, "a fact")
    assert r.ok
    with r.step("two"):
        raise StepFailed("cmake: no")
    assert not r.ok and r.failed()[0].name == "two"
    data = json.loads(r.as_json())
    assert data["ok"] is False and set(data["steps_seconds"]) == {"one", "two"}
    assert "FAIL  two" in r.table() and "seconds per step" in r.table()


def test_the_stub_defines_every_driver_symbol_an_extension_imports(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    stub_dir = tmp_path / "stub"
    assert set(stub.build(empty, stub_dir)) == {"cuInit", "cuDriverGetVersion", "cuGetProcAddress"}
    site = tmp_path / "site"
    site.mkdir()
    (tmp_path / "ext.c").write_text("int cuDeviceGetCount(int *n); int f(void) { int n; return cuDeviceGetCount(&n); }\n")
    subprocess.run(["cc", "-shared", "-fPIC", str(tmp_path / "ext.c"), "-o", str(site / "ext.so"),
                    "-Wl,--no-as-needed", f"-L{stub_dir}", "-lcuda"], check=True)
    assert "cuDeviceGetCount" in stub.build(site, stub_dir)
    caller = tmp_path / "call.c"
    caller.write_text("int cuDeviceGetCount(int *n); int main(void) { int n; return cuDeviceGetCount(&n); }\n")
    subprocess.run(["cc", str(caller), "-o", str(tmp_path / "call"), f"-L{stub_dir}", "-lcuda"], check=True)
    assert subprocess.run([str(tmp_path / "call")], env={"LD_LIBRARY_PATH": str(stub_dir)}).returncode == 34


def test_files_two_packages_ship_are_found_and_pips_winner_named(tmp_path):
    from dsv4_images.prove import env

    def dist(name, rows):
        info = tmp_path / f"{name}.dist-info"
        info.mkdir()
        rows = "".join(f"{path},sha256={digest},1\n" for path, digest in rows)
        (info / "RECORD").write_text(rows + f"{name}.dist-info/RECORD,,\n")
    dist("cuda_python-12.6.2.post1", [("cuda/bindings/runtime.py", "old"), ("cuda/__init__.py", "same"), ("b.py", "x")])
    dist("cuda_bindings-13.5.0", [("cuda/bindings/runtime.py", "new"), ("cuda/__init__.py", "same")])
    found = env.overlaps(tmp_path)
    assert found == [{"dists": ["cuda-bindings==13.5.0", "cuda-python==12.6.2.post1"], "files": 1,
                      "example": "cuda/bindings/runtime.py", "pip_winner": "cuda-bindings==13.5.0"}]

    class FakeEnv:
        def overlaps(self):
            return found + [{"dists": ["a==1", "b==1"], "files": 1, "example": "build_backend.py", "pip_winner": "a==1"}]
    r = report.Report("sm120")
    runtime.overlapping_files(r, FakeEnv())
    assert [x.status for x in r.lines] == ["FAIL", "INFO"] and "cudaLibrary_t" in r.lines[0].detail
