import json
import re

import pytest

from dsv4_images import REPO_ROOT, matrix
from dsv4_images.errors import UserError
from tests.support.local_files import broken_matrix

M = matrix.load()


@pytest.mark.parametrize("arch,target", [
    ("sm_100a", "sm100"), ("sm_103a", "sm100"), ("sm100", "sm100"), ("SM_103A", "sm100"),
    ("sm_120", "sm120"), ("sm_120a", "sm120"), ("sm120", "sm120"), ("cpu", "cpu")])
def test_arch_aliases_resolve(arch, target):
    assert M.resolve(arch).name == target


def test_unknown_arch_lists_the_valid_ones_and_exits_2():
    with pytest.raises(UserError) as exc:
        M.resolve("sm_90a")
    assert exc.value.exit_code == 2
    message = str(exc.value)
    assert "\n" not in message
    for name in ("sm100", "sm_103a", "sm120", "sm_120", "cpu"):
        assert name in message


def test_every_base_is_pinned_by_digest_or_made_here_from_a_manifest():
    """An upstream base is pinned by digest; a base without one is bootstrapped and its packages are pinned."""
    for t in M.targets.values():
        for ref in (t.base.build, t.base.runtime):
            assert ref is None or re.search(r"@sha256:[0-9a-f]{64}$", ref), (t.name, ref)
        assert t.base.bootstrap and (REPO_ROOT / t.base.bootstrap.manifest).is_file(), t.name
    assert all(M.resolve(n).base.runtime is None for n in ("sm100", "sm120"))


def test_sm100_compiles_the_10x_family_and_sm120_the_12x_family():
    sm100, sm120 = M.resolve("sm100"), M.resolve("sm120")
    assert sm100.toolchain.cuda.startswith("13.")  # family targets need CUDA >= 12.9/13
    assert sm100.toolchain.torch_cuda_arch_list == "10.0"
    assert set(sm100.toolchain.flashinfer_cuda_arch_list.split()) == {"10.0a", "10.3a"}
    assert sm100.compute_capabilities == ("10.0", "10.3")
    assert sm120.toolchain.torch_cuda_arch_list == "12.0"
    assert sm120.toolchain.flashinfer_cuda_arch_list == "12.0f"


def test_vllm_pins_and_serve_defaults_follow_the_card():
    sm100, sm120 = M.resolve("sm100"), M.resolve("sm120")
    for t in (sm100, sm120):
        assert t.vllm.version == "0.33.0"
        assert t.vllm.sdist_sha256 == "f4c33c2503d52bb411146afa9618a4f48bed68912f617e6803ac8d76e4c74112"
        assert t.toolchain.flashinfer == "0.7.2.post1"
        assert t.serve.model == "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP"
        assert t.serve.kv_cache_dtype == "fp8"
        assert t.serve.tokenizer_mode == t.serve.reasoning_parser == t.serve.tool_call_parser == "deepseek_v4"
    assert (sm100.serve.tensor_parallel_size, sm100.serve.num_speculative_tokens) == (4, 2)
    assert (sm120.serve.tensor_parallel_size, sm120.serve.num_speculative_tokens) == (2, 1)
    assert sm120.serve.disable_custom_all_reduce and not sm100.serve.disable_custom_all_reduce
    assert (sm120.serve.max_num_seqs, sm120.serve.max_num_batched_tokens) == (8, 2048)


def test_sm120_inherits_what_it_does_not_override():
    sm100, sm120 = M.resolve("sm100"), M.resolve("sm120")
    assert sm120.base == sm100.base
    assert sm120.patches == sm100.patches
    assert sm120.serve.model == sm100.serve.model


def test_matrix_json_is_what_the_workflow_reads():
    """CI builds `file: matrix.dockerfile` for each entry of `--kind cuda --compact`, written to $GITHUB_OUTPUT
    as one line; the GPU job runs on `matrix.verify_runner`."""
    every = json.loads(M.as_json())["include"]
    assert sorted(e["target"] for e in every) == ["cpu", "sm100", "sm120"]
    for entry in every:
        assert (REPO_ROOT / entry["dockerfile"]).is_file(), entry["dockerfile"]
    compact = M.as_json(kind="cuda", compact=True)
    assert "\n" not in compact and " " not in compact
    cuda = json.loads(compact)["include"]
    assert [(e["target"], e["verify_runner"]) for e in cuda] == [("sm100", "gpu-sm100"), ("sm120", "gpu-sm120")]
    assert [e["target"] for e in json.loads(M.as_json(kind="cpu"))["include"]] == ["cpu"]


@pytest.mark.parametrize("old,new,key", [
    ("tensor_parallel_size = 4", 'tensor_parallel_size = "four"', "targets.sm100.serve.tensor_parallel_size"),
    ("num_speculative_tokens = 2", "num_speculative_tokens = -1", "targets.sm100.serve.num_speculative_tokens"),
    ("[targets.cpu.base]\n", '[targets.cpu.base]\nbuild = "debian:bookworm-slim#sha256:' + "a" * 64 + '"\nruntime = "x"\n',
     "targets.cpu.base.build"),
    ("[targets.cpu.base]\n", '[targets.cpu.base]\nbuild = "debian:bookworm-slim@sha256:' + "a" * 64 + '"\n',
     "targets.cpu.base: build and runtime are both digests or both absent"),
    ('variant = "minbase", include = ["ca-certificates"], source_date_epoch = 1764547200',
     'variant = "minbase", include = ["ca-certificates"], source_date_epoch = -1', "targets.sm100.base.bootstrap.source_date_epoch"),
    ('kind = "cuda"', 'kind = "rocm"', "targets.sm100.kind"),
    ('job_memory_gib = 9', 'job_memory_gb = 9', "targets.sm100.vllm.compile.job_memory_gib"),
    ('source = "wheel"\nsources', 'source = "wheels"\nsources', "targets.sm100.vllm.source"),
    ('gcc_min = 13', 'gcc_min = 0', "targets.sm100.vllm.compile.gcc_min"),
    ('ref_in = "CMakeLists.txt"', 'ref_in = "/CMakeLists.txt"', 'externals."vllm-0.33.0".pins[0].ref_in'),
    ('commit = "cb4247394dd82148787aed73e5dc7cef33cbf862"', 'commit = "cb42473"', 'externals."vllm-0.33.0".pins[0].commit'),
    ('path = "third-party/cutlass"', 'path = "third-party/cutlass"\nenv = "X_SRC_DIR"', "deepgemm/third-party/cutlass"),
    ('env = "QUTLASS_SRC_DIR"', 'env = "QUTLASS_SRC_DIR"\ncmake_arg = "FETCHCONTENT_SOURCE_DIR_QUTLASS"', "(qutlass)"),
    ('parent = "flashkda"', 'parent = "flashkda/cutlass"', "flashkda/cutlass"),
    ('externals = "vllm-0.33.0"', 'externals = "vllm-0.34.0"', "targets.sm100.vllm.externals"),
    ('accepted_unmet = ["torch",', 'accepted_unmet = ["numpy", "torch",', "targets.cpu.vllm.accepted_unmet"),
    ('extends = "sm100"', 'extends = "sm999"', "targets.sm120.extends"),
    ("schema = 1", "schema = 2", "schema: expected 1, got 2"),
    ('flashinfer = "0.7.2.post1"\n', "", "targets.sm100.toolchain.flashinfer: missing (required for kind = cuda)"),
    ('ci = { build_runner = "ubuntu-24.04-16core", verify_runner = "gpu-sm100" }',
     'ci = { build_runner = "ubuntu-24.04-16core" }', "targets.sm100.ci.verify_runner: missing"),
    ('\nbootstrap = { suite = "bookworm"', '\n# bootstrap = { suite = "bookworm"',
     "targets.cpu.base.bootstrap: missing (the cpu target must be buildable"),
    ('\nbootstrap = { suite = "trixie"', '\n# bootstrap = { suite = "trixie"',
     "targets.sm100.base.bootstrap: missing (the cuda target must be buildable"),
])
def test_a_bad_entry_is_a_clear_error_naming_the_key(tmp_path, old, new, key):
    with pytest.raises(UserError) as exc:
        matrix.load(broken_matrix(tmp_path, old, new, first_only=True))
    assert key in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_missing_patch_file_is_named(tmp_path):
    path = broken_matrix(tmp_path, "0001-cpu-expand-kernel-keeps-float-outputs.patch", "0001-nope.patch", first_only=True)
    with pytest.raises(UserError, match=r"targets.cpu.patches\[0\].file: no such file .*0001-nope.patch"):
        matrix.load(path)


def test_a_target_extending_itself_through_another_is_a_cycle(tmp_path):
    path = broken_matrix(tmp_path, "[targets.sm100]\n", '[targets.sm100]\nextends = "sm120"\n', first_only=True)
    with pytest.raises(UserError, match=r"^matrix.toml: targets.sm100.extends: cycle sm100 -> sm120 -> sm100$"):
        matrix.load(path)


def test_an_alias_claimed_by_two_targets_is_refused(tmp_path):
    path = broken_matrix(tmp_path, 'aliases = ["cpu", "x86_64", "x86-64"]', 'aliases = ["cpu", "x86_64", "SM_120"]', first_only=True)
    with pytest.raises(UserError, match=r"targets.cpu.aliases: 'SM_120' is also an alias of sm120"):
        matrix.load(path)


def test_invalid_toml_is_one_line(tmp_path):
    path = tmp_path / "matrix.toml"
    path.write_text("schema = 1\n[project\n")
    with pytest.raises(UserError, match="not valid TOML"):
        matrix.load(path)


def test_owner_is_validated(monkeypatch):
    assert M.image_name("acme") == "ghcr.io/acme/dsv4-flash"
    monkeypatch.setenv("DSV4_OWNER", "team-x")
    assert M.image_name() == "ghcr.io/team-x/dsv4-flash"
    assert M.image_name("acme") == "ghcr.io/acme/dsv4-flash"  # --owner beats $DSV4_OWNER
    monkeypatch.delenv("DSV4_OWNER")
    assert M.image_name() == "ghcr.io/dsv4-flash/dsv4-flash"  # the matrix's default_owner
    with pytest.raises(UserError, match="invalid owner"):
        M.image_name("Bad Owner")
