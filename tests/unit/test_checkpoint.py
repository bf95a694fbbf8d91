"""checkpoint.check_mtp on DeepSeek-V4 and V3-style checkpoints: stripped, DSpark, mis-numbered and
quantized MTP blocks are refused in one line that names the file; good ones pass; what cannot be read
is "not checked". Fixtures are synthetic headers and indexes, and the cpu target's tiny model."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from dsv4_images.in_image import checkpoint as ck
from dsv4_images.in_image import tinymodel
from tests.unit.checkpoint_fixtures import (DSPARK_CONFIG, LAYERS, V4_CONFIG, dspark_stages, v4_checkpoint,
                                            v4_main, v4_mtp_stage, write_checkpoint, write_shard)

NVFP4 = "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP"
W4A16 = "canada-quant/DeepSeek-V4-Flash-W4A16-FP8-MTP"
MTP_SHARD = "model-00002-of-00002.safetensors"


def refused(model, env=None, profile=None, hub=None) -> ck.Refusal:
    with pytest.raises(ck.Refusal) as exc:
        ck.check_mtp(str(model), env or {}, profile, hub)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(exc.value.file + ": ")
    return exc.value


def index_of(root: Path) -> str:
    return str(root / "model.safetensors.index.json")


# ---- good checkpoints --------------------------------------------------------------------------

def test_a_bf16_mtp_block_passes_its_models_profile(tmp_path):
    root = v4_checkpoint(tmp_path / "ok")
    found = ck.check_mtp(str(root), {}, NVFP4)
    assert found == f"{len(v4_mtp_stage())} MTP tensors found in 1 stage(s), profile {NVFP4}, all BF16/F32 in 1 shard header(s) read"


def test_the_architecture_profile_applies_without_a_model_id(tmp_path):
    found = ck.check_mtp(str(v4_checkpoint(tmp_path / "ok")), {})
    assert found.endswith("profile DeepseekV4ForCausalLM, 1 shard header(s) read, dtypes not fixed by the profile")


def test_the_model_id_selects_its_profile_in_the_hugging_face_cache(tmp_path):
    repo = tmp_path / "hf" / "hub" / ("models--" + W4A16.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("rev1\n")
    v4_checkpoint(repo / "snapshots" / "rev1")
    found = ck.check_mtp(W4A16, {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert f"profile {W4A16}" in found and found.endswith("all BF16/F32 in 1 shard header(s) read")


def _cached(hub: Path, model: str, refs: dict[str, str]) -> Path:
    """A Hugging Face cache repo under `hub` whose refs name snapshots (each a small V4 checkpoint)."""
    repo = hub / ("models--" + model.replace("/", "--"))
    for ref, snapshot in refs.items():
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(snapshot)
        v4_checkpoint(repo / "snapshots" / snapshot)
    return repo


def test_the_hugging_face_cache_is_found_where_huggingface_hub_puts_it(tmp_path):
    """HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else $HOME/.cache/huggingface/hub:
    a cache at each place (its snapshot named after the variable), and the variables dropped one by one."""
    env = {"HF_HUB_CACHE": str(tmp_path / "a"), "HF_HOME": str(tmp_path / "b"), "XDG_CACHE_HOME": str(tmp_path / "c"),
           "HOME": str(tmp_path / "d")}
    hubs = {"HF_HUB_CACHE": tmp_path / "a", "HF_HOME": tmp_path / "b" / "hub",
            "XDG_CACHE_HOME": tmp_path / "c" / "huggingface" / "hub", "HOME": tmp_path / "d" / ".cache" / "huggingface" / "hub"}
    repos = {key: _cached(hub, NVFP4, {"main": key}) for key, hub in hubs.items()}
    for key in hubs:
        assert ck.find_local_checkpoint(NVFP4, env) == (repos[key] / "snapshots" / key, "hf-cache"), key
        del env[key]


def test_model_revision_selects_the_snapshot_its_ref_names(tmp_path):
    repo = _cached(tmp_path / "hub", NVFP4, {"main": "r1", "v2": "r2"})
    assert ck.find_local_checkpoint(NVFP4, {"HF_HUB_CACHE": str(tmp_path / "hub")})[0] == repo / "snapshots" / "r1"
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "MODEL_REVISION": "v2"}
    assert ck.find_local_checkpoint(NVFP4, env)[0] == repo / "snapshots" / "r2"
    assert ck.find_local_checkpoint(NVFP4, {**env, "MODEL_REVISION": "v3"}) is None  # not cached: not local


def test_a_commit_pin_selects_its_snapshot_which_no_ref_names(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = _cached(tmp_path / "hub", NVFP4, {"main": "r1"})
    v4_checkpoint(repo / "snapshots" / commit)  # fetched by commit: the Hub cache writes no refs/ file for it
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "MODEL_REVISION": commit}
    assert ck.find_local_checkpoint(NVFP4, env)[0] == repo / "snapshots" / commit
    other = "f" * 40
    assert ck.find_local_checkpoint(NVFP4, {**env, "MODEL_REVISION": other}) is None  # not cached: not local


def test_the_cpu_tiny_model_passes_as_deepseek_v3(tmp_path):
    tinymodel.write_model(tmp_path / "tiny", seed=0)
    found = ck.check_mtp(str(tmp_path / "tiny"), {})
    assert found.startswith("44 MTP tensors found in 1 stage(s), profile DeepseekV3ForCausalLM")


# ---- refusals: no MTP, no next-n layers ----------------------------------------------------------

def test_a_stripped_v4_checkpoint_is_refused(tmp_path):
    root = write_checkpoint(tmp_path / "stripped", {"m.safetensors": v4_main()}, V4_CONFIG)
    exc = refused(root)
    assert exc.file == index_of(root)
    assert exc.reason == (f"holds no MTP tensors (mtp.* absent among {len(v4_main())} tensors): "
                          "no MTP block, as when an export strips it")


def test_a_stripped_tiny_model_is_refused_naming_the_v3_layer(tmp_path):
    tinymodel.write_model(tmp_path / "tiny", seed=0, with_mtp=False)
    exc = refused(tmp_path / "tiny")
    assert exc.file == str(tmp_path / "tiny" / "model.safetensors")
    assert "holds no MTP tensors (model.layers.2.* absent among" in exc.reason


@pytest.mark.parametrize("nextn,reason", [
    (0, "num_nextn_predict_layers is 0: the checkpoint declares no MTP layer (vLLM's method=mtp fails on it "
        "with ZeroDivisionError)"),
    (None, "num_nextn_predict_layers is absent: the checkpoint declares no MTP layer"),
    ("1", "num_nextn_predict_layers is '1', not a non-negative integer"),
    (-1, "num_nextn_predict_layers is -1, not a non-negative integer"),
    (True, "num_nextn_predict_layers is True, not a non-negative integer"),
])
def test_a_config_without_next_n_layers_is_refused(tmp_path, nextn, reason):
    config = {k: v for k, v in V4_CONFIG.items() if k != "num_nextn_predict_layers"}
    if nextn is not None:
        config["num_nextn_predict_layers"] = nextn
    root = v4_checkpoint(tmp_path / "c", config=config)
    exc = refused(root)
    assert exc.file == str(root / "config.json") and reason in exc.reason


def test_the_tiny_model_with_no_next_n_layers_is_refused(tmp_path):
    tinymodel.write_model(tmp_path / "tiny", seed=0)
    config = json.loads((tmp_path / "tiny" / "config.json").read_text())
    (tmp_path / "tiny" / "config.json").write_text(json.dumps({**config, "num_nextn_predict_layers": 0}))
    assert "num_nextn_predict_layers is 0" in refused(tmp_path / "tiny").reason


@pytest.mark.parametrize("content,reason", [
    ("{", "file is not valid JSON"), ("[]", "file is a JSON list, not an object"),
    ('{"num_hidden_layers": "43", "model_type": "deepseek_v4", "num_nextn_predict_layers": 1}',
     "num_hidden_layers is '43', not a positive integer"),
])
def test_a_malformed_config_is_refused(tmp_path, content, reason):
    root = v4_checkpoint(tmp_path / "c")
    (root / "config.json").write_text(content)
    exc = refused(root)
    assert exc.file == str(root / "config.json") and reason in exc.reason


# ---- refusals: a different drafter under mtp.* (DSpark) --------------------------------------------

@pytest.mark.parametrize("nextn", [1, 3])
def test_a_dspark_drafter_under_mtp_is_refused_and_named(tmp_path, nextn):
    root = v4_checkpoint(tmp_path / "0731", mtp=dspark_stages(), config={**DSPARK_CONFIG, "num_nextn_predict_layers": nextn})
    exc = refused(root)
    assert exc.file == index_of(root)
    assert "MTP stages hold tensor families a DeepseekV4ForCausalLM MTP block does not have " \
           "(confidence_head.*, main_norm.*, main_proj.*, markov_head.*)" in exc.reason
    assert "this is a DSpark drafter (confidence_head, main_norm, main_proj, markov_head, dspark_block_size" in exc.reason
    assert "vLLM's method=mtp half-loads it (vllm#41834)" in exc.reason


def test_a_dspark_drafter_is_refused_by_principle_without_its_config_keys(tmp_path):
    """No dspark_* keys and heads renamed: the unknown families and the missing e_proj/h_proj still refuse it."""
    stages = {k.replace("markov_head", "bias_head"): v for k, v in dspark_stages().items()}
    exc = refused(v4_checkpoint(tmp_path / "d", mtp=stages, config={**V4_CONFIG, "num_nextn_predict_layers": 3}))
    assert "(bias_head.*, confidence_head.*, main_norm.*, main_proj.*)" in exc.reason
    assert "DSpark" in exc.reason  # confidence_head and main_proj are DSpark's markers
    only_known = {k: v for k, v in dspark_stages().items()
                  if not any(f in k for f in ("main_", "markov_head", "confidence_head"))}
    exc = refused(v4_checkpoint(tmp_path / "e", mtp=only_known, config={**V4_CONFIG, "num_nextn_predict_layers": 3}))
    assert exc.reason == ("mtp.0.* lacks e_proj, h_proj, enorm, hnorm, norm: not a complete DeepseekV4ForCausalLM "
                          "MTP block")


# ---- refusals: stages and layers against the config -------------------------------------------------

def test_more_mtp_stages_than_the_config_declares_are_refused(tmp_path):
    exc = refused(v4_checkpoint(tmp_path / "x", mtp={**v4_mtp_stage(0), **v4_mtp_stage(1)}))
    assert exc.reason == "holds MTP stages mtp.0.*, mtp.1.* but config.json num_nextn_predict_layers=1 expects stages 0..0"


def test_fewer_mtp_stages_than_the_config_declares_are_refused(tmp_path):
    exc = refused(v4_checkpoint(tmp_path / "x", config={**V4_CONFIG, "num_nextn_predict_layers": 2}))
    assert "holds MTP stages mtp.0.* but config.json num_nextn_predict_layers=2 expects stages 0..1" in exc.reason
    exc = refused(v4_checkpoint(tmp_path / "y", mtp=v4_mtp_stage(1)))
    assert "holds MTP stages mtp.1.* but" in exc.reason


def test_main_layers_must_match_num_hidden_layers(tmp_path):
    exc = refused(v4_checkpoint(tmp_path / "x", config={**V4_CONFIG, "num_hidden_layers": LAYERS + 1}))
    assert exc.reason == f"holds main layers 0-{LAYERS - 1} but config.json num_hidden_layers={LAYERS + 1} expects 0-{LAYERS}"


def test_hostile_numbers_in_the_config_and_names_cost_nothing(tmp_path):
    """A layer count of 10**15 and a 5000-digit stage number are compared, not enumerated or converted."""
    exc = refused(v4_checkpoint(tmp_path / "x", config={**V4_CONFIG, "num_hidden_layers": 10 ** 15}))
    assert exc.reason == f"holds main layers 0-{LAYERS - 1} but config.json num_hidden_layers={10 ** 15} expects 0-{10 ** 15 - 1}"
    exc = refused(v4_checkpoint(tmp_path / "y", config={**V4_CONFIG, "num_nextn_predict_layers": 10 ** 15}))
    assert f"num_nextn_predict_layers={10 ** 15} expects stages 0..{10 ** 15 - 1}" in exc.reason
    mtp = {**v4_mtp_stage(), "mtp." + "9" * 5000 + ".e_proj.weight": ("BF16", [2])}
    found = ck.check_mtp(str(v4_checkpoint(tmp_path / "z", mtp=mtp)), {})  # no stage number: not an MTP tensor
    assert found.startswith(f"{len(v4_mtp_stage())} MTP tensors found in 1 stage(s)")


def test_v3_style_layer_numbers_follow_num_hidden_layers(tmp_path):
    """The tiny model has main layers 0-1 and its MTP layer at 2. Told it has 1 main layer, layer 1 (a plain
    decoder layer) would be its MTP layer and layer 2 a second one: both are caught."""
    tinymodel.write_model(tmp_path / "tiny", seed=0)
    config_path = tmp_path / "tiny" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "num_hidden_layers": 1}))
    assert refused(tmp_path / "tiny").reason.startswith("model.layers.1.* lacks enorm, hnorm, eh_proj, shared_head")
    config_path.write_text(json.dumps({**config, "num_hidden_layers": 3}))
    assert "holds no MTP tensors (model.layers.3.* absent among" in refused(tmp_path / "tiny").reason
    config_path.write_text(json.dumps({**config, "num_nextn_predict_layers": 2}))
    assert "holds MTP stages model.layers.2.* but config.json num_nextn_predict_layers=2" in refused(tmp_path / "tiny").reason


# ---- refusals: a quantized MTP block where BF16 is expected -------------------------------------------

@pytest.mark.parametrize("suffix", ["weight_scale", "weight_scale_inv", "weight_scale_2", "weight_global_scale",
                                    "input_scale", "input_global_scale", "weight_packed", "weight_zero_point",
                                    "scale", "qweight", "quant_state.bitsandbytes__nf4"])
def test_quantization_suffixes_in_the_mtp_block_are_refused_where_bf16_is_expected(tmp_path, suffix):
    mtp = {**v4_mtp_stage(), f"mtp.0.attn.wq_a.{suffix}": ("F32", [1, 1])}
    root = v4_checkpoint(tmp_path / "q", mtp=mtp)
    exc = refused(root, profile=NVFP4)
    assert exc.file == index_of(root)
    assert exc.reason == (f"MTP block is quantized (1 tensor(s) with quantization suffixes, e.g. mtp.0.attn.wq_a.{suffix}) "
                          f"but {NVFP4} expects BF16/F32")
    assert ck.check_mtp(str(root), {}).startswith(f"{len(mtp)} MTP tensors found")  # no BF16 expectation by architecture


def test_the_hc_scale_tensors_are_not_quantization_scales(tmp_path):
    assert "all BF16/F32" in ck.check_mtp(str(v4_checkpoint(tmp_path / "ok")), {}, NVFP4)  # hc_*_scale present


@pytest.mark.parametrize("name,dtype", [("mtp.0.e_proj.weight", "F8_E4M3"), ("mtp.0.attn.wq_b.weight", "F16"),
                                        ("mtp.0.ffn.experts.0.w1.weight", "I8"), ("mtp.0.hc_head_fn", "F8_E8M0")])
def test_a_non_bf16_dtype_in_the_shard_header_is_refused(tmp_path, name, dtype):
    mtp = {**v4_mtp_stage(), name: (dtype, [2, 2])}
    root = v4_checkpoint(tmp_path / "q", mtp=mtp)
    exc = refused(root, profile=W4A16)
    assert exc.file == str(root / MTP_SHARD)
    assert exc.reason == f"MTP tensor {name} is {dtype} but {W4A16} expects BF16/F32 (a quantized MTP block)"


def test_an_integer_buffer_that_is_not_a_weight_is_allowed(tmp_path):
    mtp = {**v4_mtp_stage(), "mtp.0.ffn.gate.tid2eid": ("I32", [2, 2])}
    assert "all BF16/F32" in ck.check_mtp(str(v4_checkpoint(tmp_path / "ok", mtp=mtp)), {}, NVFP4)


def test_a_profile_is_data_a_new_model_states_its_own_expectations(tmp_path, monkeypatch):
    """The tiny model passes a profile that wants BF16/F32 and fails one that wants F32 only: nothing but
    a PROFILES entry changed."""
    tinymodel.write_model(tmp_path / "tiny", seed=0)
    monkeypatch.setitem(ck.PROFILES, "test/tiny-bf16", {"base": "DeepseekV3ForCausalLM", "weight_dtypes": ["BF16", "F32"]})
    monkeypatch.setitem(ck.PROFILES, "test/tiny-f32", {"base": "DeepseekV3ForCausalLM", "weight_dtypes": ["F32"]})
    assert ck.check_mtp(str(tmp_path / "tiny"), {}, "test/tiny-bf16").endswith("all BF16/F32 in 1 shard header(s) read")
    exc = refused(tmp_path / "tiny", profile="test/tiny-f32")
    assert exc.file == str(tmp_path / "tiny" / "model.safetensors") and "is BF16 but test/tiny-f32 expects F32" in exc.reason


def test_profiles_resolve_by_explicit_name_then_model_id_then_architecture():
    assert ck.profile_for(W4A16, {}).key == W4A16
    assert ck.profile_for(W4A16, {})["weight_dtypes"] == ["BF16", "F32"]  # inherited from the NVFP4 sibling
    assert ck.profile_for(W4A16, {})["layout"] == "mtp.{i}."  # inherited from DeepseekV4ForCausalLM
    assert ck.profile_for("/models/x", {"architectures": ["DeepseekV4ForCausalLM"]}).key == "DeepseekV4ForCausalLM"
    assert ck.profile_for("/models/x", {"model_type": "deepseek_v3"}).key == "DeepseekV3ForCausalLM"
    assert ck.profile_for("/models/x", {"architectures": "oops", "model_type": 3}).key == "default"
    assert ck.profile_for(NVFP4, {}, "DeepseekV4ForCausalLM").key == "DeepseekV4ForCausalLM"
    with pytest.raises(ck.Refusal, match="'nope' is not one of"):
        ck.profile_for(NVFP4, {}, "nope")
    for key in ck.PROFILES:
        assert ck.Profile(key)["doc"]


def test_an_unknown_architecture_only_needs_some_mtp_tensors(tmp_path):
    names = {"model.layers.0.mlp.weight": ("BF16", [2]), "mtp.layers.0.fc.weight": ("BF16", [2])}
    root = write_checkpoint(tmp_path / "u", {"a.safetensors": names}, {"architectures": ["Qwen3NextForCausalLM"]})
    assert ck.check_mtp(str(root), {}) == ("1 MTP tensors found in 1 stage(s), profile default, "
                                           "1 shard header(s) read, dtypes not fixed by the profile")
    root = write_checkpoint(tmp_path / "v", {"a.safetensors": {"x.weight": ("BF16", [2])}}, {"num_hidden_layers": 4})
    assert "holds no MTP tensors (mtp.* or model.layers.4.* absent among 1 tensors)" in refused(root).reason


# ---- refusals and "not checked": files -------------------------------------------------------------

def test_a_shard_the_index_names_but_the_directory_lacks_is_refused(tmp_path):
    root = v4_checkpoint(tmp_path / "x")
    (root / MTP_SHARD).unlink()
    exc = refused(root)
    assert exc.file == index_of(root) and exc.reason == f"names 1 shard(s) missing from {root}: {MTP_SHARD}"


def test_long_lists_in_a_refusal_are_cut(tmp_path):
    shards = {f"model-0000{i}.safetensors": {f"layers.0.x{i}.weight": ("BF16", [2])} for i in range(1, 6)}
    root = write_checkpoint(tmp_path / "x", {**shards, "mtp.safetensors": v4_mtp_stage()}, V4_CONFIG, write_shards=False)
    write_shard(root / "mtp.safetensors", v4_mtp_stage())
    assert refused(root).reason == (f"names 5 shard(s) missing from {root}: model-00001.safetensors, "
                                    "model-00002.safetensors, model-00003.safetensors ...")
    odd = {**v4_mtp_stage(), **{f"mtp.0.extra{i}.weight": ("BF16", [2]) for i in range(7)}}
    assert "(extra0.*, extra1.*, extra2.*, extra3.*, extra4.* ...)" in refused(v4_checkpoint(tmp_path / "y", mtp=odd)).reason


def test_a_partial_hugging_face_cache_snapshot_is_not_refused(tmp_path):
    repo = tmp_path / "hf" / "hub" / ("models--" + NVFP4.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("r")
    root = v4_checkpoint(repo / "snapshots" / "r")
    (root / MTP_SHARD).unlink()  # vLLM downloads what the cache lacks
    found = ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "hf")})
    assert found.endswith("headers not checked: 1 shard(s) holding MTP tensors not readable here")


def test_a_shard_missing_from_the_cache_is_reported_beside_those_read(tmp_path):
    repo = tmp_path / "hf" / "hub" / ("models--" + NVFP4.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("r")
    stage = list(v4_mtp_stage().items())
    root = write_checkpoint(repo / "snapshots" / "r", {"a.safetensors": v4_main(), "b.safetensors": dict(stage[:10]),
                                                       "c.safetensors": dict(stage[10:])}, V4_CONFIG)
    (root / "c.safetensors").unlink()
    found = ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "hf")})
    assert found.endswith("all BF16/F32 in 1 shard header(s) read; 1 shard(s) holding MTP tensors not readable "
                          "here, not checked")


@pytest.mark.parametrize("profile", [NVFP4, None])
def test_a_malformed_header_of_an_mtp_shard_is_refused_naming_it(tmp_path, profile):
    root = v4_checkpoint(tmp_path / "x")
    data = (root / MTP_SHARD).read_bytes()
    (root / MTP_SHARD).write_bytes(data[:20])
    exc = refused(root, profile=profile)
    assert exc.file == str(root / MTP_SHARD) and "is truncated: header says" in exc.reason


def test_only_the_shards_holding_mtp_tensors_are_read(tmp_path):
    root = v4_checkpoint(tmp_path / "x")
    (root / "model-00001-of-00002.safetensors").write_bytes(b"")  # main weights: vLLM's business, not ours
    assert ck.check_mtp(str(root), {}, NVFP4).endswith("all BF16/F32 in 1 shard header(s) read")


def test_an_index_entry_the_header_lacks_is_refused(tmp_path):
    root = v4_checkpoint(tmp_path / "x")
    stage = v4_mtp_stage()
    del stage["mtp.0.e_proj.weight"]
    write_shard(root / MTP_SHARD, stage)
    exc = refused(root, profile=NVFP4)
    assert exc.file == str(root / MTP_SHARD)
    assert exc.reason == f"lacks mtp.0.e_proj.weight, which {index_of(root)} places in it"


def test_a_malformed_index_is_refused_through_check_mtp(tmp_path):
    root = v4_checkpoint(tmp_path / "x")
    (root / "model.safetensors.index.json").write_text('{"metadata": {}}')
    exc = refused(root)
    assert exc.file == index_of(root) and exc.reason == "has no weight_map object"


def test_what_cannot_be_read_is_not_checked(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert ck.check_mtp(str(empty), {}) == f"not checked (no safetensors files in {empty})"
    offline = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    assert ck.check_mtp(NVFP4, offline) == "not checked (checkpoint not local and HF_HUB_OFFLINE is set)"


# ---- the Hub (a stand-in for huggingface_hub: two small downloads and header range reads) -------------

class EntryNotFoundError(Exception):
    pass


class LocalEntryNotFoundError(EntryNotFoundError):  # huggingface_hub's: offline and not in the cache
    pass


class SafetensorsParsingError(Exception):
    pass


class FakeHub:
    def __init__(self, root: Path, fail: Exception | None = None, fail_on: str | None = None):
        self.root, self.fail, self.fail_on, self.header_reads = root, fail, fail_on, []

    def hf_hub_download(self, repo_id, filename, revision=None):
        if self.fail and self.fail_on in (None, filename):
            raise self.fail
        if not (self.root / filename).is_file():
            raise EntryNotFoundError(filename)
        return str(self.root / filename)

    def parse_safetensors_file_metadata(self, repo_id, filename, revision=None):
        self.header_reads.append(filename)
        try:
            tensors = ck.read_safetensors_header(self.root / filename)
        except ck.Refusal as exc:
            raise SafetensorsParsingError(exc.reason) from None
        return SimpleNamespace(tensors={n: SimpleNamespace(dtype=d, shape=s) for n, (d, s) in tensors.items()})


def test_a_remote_checkpoint_is_checked_from_its_index_and_the_mtp_shards_header(tmp_path):
    hub = FakeHub(v4_checkpoint(tmp_path / "remote"))
    found = ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "none")}, hub=hub)
    assert found.endswith("all BF16/F32 in 1 shard header(s) read") and hub.header_reads == [MTP_SHARD]


def test_hf_hub_offline_set_to_0_still_asks_the_hub(tmp_path):
    hub = FakeHub(v4_checkpoint(tmp_path / "remote"))
    for off in ("0", "", "false"):
        assert ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "none"), "HF_HUB_OFFLINE": off}, hub=hub).endswith(
            "all BF16/F32 in 1 shard header(s) read"), off


def test_a_remote_quantized_mtp_block_is_refused_naming_the_remote_file(tmp_path):
    hub = FakeHub(v4_checkpoint(tmp_path / "remote", mtp={**v4_mtp_stage(), "mtp.0.h_proj.weight": ("F8_E4M3", [2, 2])}))
    with pytest.raises(ck.Refusal) as exc:
        ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "none")}, hub=hub)
    assert exc.value.file == f"{NVFP4}:{MTP_SHARD}" and "mtp.0.h_proj.weight is F8_E4M3" in exc.value.reason


def test_a_remote_stripped_checkpoint_is_refused(tmp_path):
    hub = FakeHub(write_checkpoint(tmp_path / "remote", {"m.safetensors": v4_main()}, V4_CONFIG))
    with pytest.raises(ck.Refusal) as exc:
        ck.check_mtp("RedHatAI/DeepSeek-V4-Flash-NVFP4-FP8", {"HF_HOME": str(tmp_path / "none")}, hub=hub)
    assert exc.value.file == "RedHatAI/DeepSeek-V4-Flash-NVFP4-FP8:model.safetensors.index.json"
    assert "holds no MTP tensors" in exc.value.reason


def test_a_remote_single_file_checkpoint_is_read_from_its_header(tmp_path):
    tinymodel.write_model(tmp_path / "remote", seed=0, with_mtp=False)
    hub = FakeHub(tmp_path / "remote")
    with pytest.raises(ck.Refusal, match="tiny/x:model.safetensors: holds no MTP tensors"):
        ck.check_mtp("tiny/x", {"HF_HOME": str(tmp_path / "none")}, hub=hub)


def test_a_remote_malformed_header_is_refused_and_an_unreachable_hub_is_not_checked(tmp_path):
    root = v4_checkpoint(tmp_path / "remote")
    (root / MTP_SHARD).write_bytes(b"\x00" * 4)
    with pytest.raises(ck.Refusal, match=f"{NVFP4}:{MTP_SHARD}: unreadable safetensors header"):
        ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "none")}, hub=FakeHub(root))
    for failure, on in ((ConnectionError("no route"), None), (LocalEntryNotFoundError("offline"), None),
                        (LocalEntryNotFoundError("offline"), "model.safetensors.index.json")):
        down = FakeHub(root, fail=failure, fail_on=on)
        assert ck.check_mtp(NVFP4, {"HF_HOME": str(tmp_path / "none")}, hub=down) == \
            f"not checked (checkpoint not local and its files could not be fetched from the Hub ({type(failure).__name__}))"
