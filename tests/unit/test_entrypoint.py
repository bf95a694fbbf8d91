"""The baked serve entrypoint: default commands, overrides, passthrough, preflight, bad input."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsv4_images.in_image import entrypoint as ep
from dsv4_images.in_image import tinymodel
from dsv4_images import REPO_ROOT, matrix

M = matrix.load()


def defaults(target: str) -> dict:
    return json.loads(json.dumps(M.resolve(target).serve_defaults()))


def command(target: str, env: dict | None = None, argv: list[str] | None = None) -> list[str]:
    return ep.build_command(ep.effective_settings(defaults(target), env or {}), argv or [])


def flag(cmd: list[str], name: str) -> str | None:
    return cmd[cmd.index(name) + 1] if name in cmd else None


def test_sm100_default_command():
    cmd = command("sm100")
    assert cmd[:3] == ["vllm", "serve", "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP"]
    assert flag(cmd, "--tensor-parallel-size") == "4"
    assert json.loads(flag(cmd, "--speculative-config")) == {  # with known_issues.toml's answers
        "method": "mtp", "num_speculative_tokens": 2, "draft_sample_method": "probabilistic", "moe_backend": "triton"}
    assert flag(cmd, "--kv-cache-dtype") == "fp8" and flag(cmd, "--block-size") == "256"
    for name in ("--tokenizer-mode", "--reasoning-parser", "--tool-call-parser"):
        assert flag(cmd, name) == "deepseek_v4"
    assert "--enable-auto-tool-choice" in cmd
    assert "--trust-remote-code" not in cmd  # vLLM 0.33 has DeepSeek-V4 built in; `build.py prove` runs without it
    assert "--disable-custom-all-reduce" not in cmd and "--cudagraph-capture-sizes" not in cmd
    assert flag(cmd, "--port") == "8000" and flag(cmd, "--host") == "0.0.0.0"


def test_sm120_default_command():
    cmd = command("sm120")
    assert flag(cmd, "--tensor-parallel-size") == "2"
    assert json.loads(flag(cmd, "--speculative-config"))["num_speculative_tokens"] == 1
    assert "--disable-custom-all-reduce" in cmd
    assert flag(cmd, "--max-num-seqs") == "8" and flag(cmd, "--max-num-batched-tokens") == "2048"
    sizes = [int(x) for x in cmd[cmd.index("--cudagraph-capture-sizes") + 1:cmd.index("--cudagraph-capture-sizes") + 5]]
    assert sizes == [2, 4, 8, 16] and all(s % 2 == 0 for s in sizes)
    assert flag(cmd, "--attention-config.indexer_kv_dtype") == "fp8" and flag(cmd, "--moe-backend") == "auto"


def test_cpu_default_command_serves_the_baked_tiny_model():
    cmd = command("cpu")
    assert cmd[2] == "/opt/dsv4-flash/models/tiny-mtp"
    assert flag(cmd, "--served-model-name") == "tiny-mtp" and "--enforce-eager" in cmd
    assert "--tokenizer-mode" not in cmd


@pytest.mark.parametrize("env,name,value", [
    ({"MODEL": "/models/x"}, None, "/models/x"),
    ({"TENSOR_PARALLEL_SIZE": "8"}, "--tensor-parallel-size", "8"),
    ({"MAX_MODEL_LEN": "4096"}, "--max-model-len", "4096"),
    ({"PORT": "9000"}, "--port", "9000"),
    ({"HOST": "127.0.0.1"}, "--host", "127.0.0.1"),
    ({"MAX_NUM_SEQS": "16"}, "--max-num-seqs", "16"),
    ({"MAX_NUM_BATCHED_TOKENS": "8192"}, "--max-num-batched-tokens", "8192"),
    ({"SERVED_MODEL_NAME": "dsv4"}, "--served-model-name", "dsv4"),
    ({"KV_CACHE_DTYPE": "auto"}, "--kv-cache-dtype", "auto"),
])
def test_every_override(env, name, value):
    cmd = command("sm100", env)
    assert (cmd[2] if name is None else flag(cmd, name)) == value


def test_num_speculative_tokens_zero_turns_mtp_off_and_capture_sizes_follow_k():
    assert "--speculative-config" not in command("sm100", {"NUM_SPECULATIVE_TOKENS": "0"})
    cmd = command("sm120", {"NUM_SPECULATIVE_TOKENS": "2"})
    assert json.loads(flag(cmd, "--speculative-config"))["num_speculative_tokens"] == 2
    i = cmd.index("--cudagraph-capture-sizes")
    assert cmd[i + 1:i + 5] == ["3", "6", "12", "24"]
    i = command("sm120", {"NUM_SPECULATIVE_TOKENS": "0"}).index("--cudagraph-capture-sizes")
    assert command("sm120", {"NUM_SPECULATIVE_TOKENS": "0"})[i + 1:i + 5] == ["1", "2", "4", "8"]


def test_passthrough_and_extra_args_come_last_so_they_win():
    cmd = command("sm100", {"VLLM_EXTRA_ARGS": "--gpu-memory-utilization 0.85 --seed '7'"},
                  ["--max-model-len", "8192", "--enforce-eager"])
    assert cmd[-7:-3] == ["--gpu-memory-utilization", "0.85", "--seed", "7"]
    assert cmd[-3:] == ["--max-model-len", "8192", "--enforce-eager"]
    assert cmd.index("--gpu-memory-utilization") < cmd.index("--enforce-eager")
    assert cmd.index("--max-model-len") < len(cmd) - 3  # the default is still there, the later one wins


@pytest.mark.parametrize("env,message", [
    ({"TENSOR_PARALLEL_SIZE": "abc"}, "TENSOR_PARALLEL_SIZE='abc' is not an integer between 1 and 64"),
    ({"TENSOR_PARALLEL_SIZE": "0"}, "TENSOR_PARALLEL_SIZE='0' is not an integer between 1 and 64"),
    ({"NUM_SPECULATIVE_TOKENS": "-1"}, "NUM_SPECULATIVE_TOKENS='-1' is not an integer between 0 and 8"),
    ({"NUM_SPECULATIVE_TOKENS": "2.5"}, "NUM_SPECULATIVE_TOKENS='2.5' is not an integer between 0 and 8"),
    ({"NUM_SPECULATIVE_TOKENS": "9"}, "NUM_SPECULATIVE_TOKENS='9' is not an integer between 0 and 8"),
    ({"NUM_SPECULATIVE_TOKENS": "٢"}, "NUM_SPECULATIVE_TOKENS='٢' is not an integer between 0 and 8 (ASCII digits only)"),
    ({"PORT": "70000"}, "PORT='70000' is not an integer between 1 and 65535"),
    ({"PORT": " 8000"}, "PORT=' 8000' is not an integer between 1 and 65535"),
    ({"MAX_MODEL_LEN": ""}, "MAX_MODEL_LEN='' is not an integer between 1 and 2147483647"),
    ({"MAX_NUM_SEQS": "1" + "0" * 30}, "MAX_NUM_SEQS='1000000000000000000000000000000' is not an integer between 1 and 65536"),
    ({"HOST": "0.0.0.0; id"}, "HOST='0.0.0.0; id' is not an IP address or host name"),
    ({"MODEL": "org/name with spaces"}, "MODEL='org/name with spaces' is neither a path"),
    ({"SERVED_MODEL_NAME": "a b"}, "SERVED_MODEL_NAME='a b' is not a name"),
    ({"KV_CACHE_DTYPE": "FP8!"}, "KV_CACHE_DTYPE='FP8!' is not a vLLM cache dtype name"),
    ({"VLLM_EXTRA_ARGS": "seed 1"}, "VLLM_EXTRA_ARGS starts with 'seed', not an option"),
    ({"DSV4_SKIP_PREFLIGHT": "maybe"}, "DSV4_SKIP_PREFLIGHT='maybe' is not 0 or 1"),
    ({"HOME": "relative"}, "HOME='relative' is not an absolute path"),
    ({"MODEL_REVISION": "../../etc"}, "MODEL_REVISION='../../etc' is not a branch, tag or commit"),
    ({"VLLM_API_KEY": ""}, "VLLM_API_KEY is set but empty"),
    ({"MODEL": "  "}, "MODEL is set but empty"),
    ({"VLLM_EXTRA_ARGS": "--seed 'unclosed"}, "VLLM_EXTRA_ARGS cannot be parsed"),
])
def test_a_malformed_override_is_one_clear_line_and_exit_2(tmp_path, capsys, env, message):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("sm120")))
    assert ep.main(["--print-command"], env, path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"[dsv4-flash] error: {message}") and "\n" not in err


def test_print_command_prints_the_exact_command(tmp_path, capsys):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("sm100")))
    assert ep.main(["--print-command", "--seed", "1"], {}, path) == 0
    out = capsys.readouterr().out.strip()
    assert shlex.split(out) == command("sm100", {}, ["--seed", "1"])


def test_missing_defaults_file_is_a_clear_error(tmp_path, capsys):
    assert ep.main(["--print-command"], {}, tmp_path / "nope.json") == 2
    assert "cannot read the image's serve defaults" in capsys.readouterr().err


# ---- preflight: the checkpoint (the cases themselves are in test_checkpoint*.py) ---------------

@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    tinymodel.write_model(root / "with-mtp", seed=1)
    tinymodel.write_model(root / "stripped", seed=1, with_mtp=False)
    return root


def preflight_only(tmp_path, target: str, env: dict, capsys) -> tuple[int, str]:
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults(target)))
    code = ep.main(["--preflight-only"], env, path)
    return code, capsys.readouterr().err


def test_preflight_accepts_a_checkpoint_with_mtp_tensors(tiny_checkpoints, tmp_path, capsys):
    code, err = preflight_only(tmp_path, "cpu", {"MODEL": str(tiny_checkpoints / "with-mtp")}, capsys)
    assert code == 0
    assert "[dsv4-flash] preflight: MTP k=2: 44 MTP tensors found in 1 stage(s), profile DeepseekV3ForCausalLM" in err


def test_preflight_refuses_a_stripped_checkpoint_in_one_line_with_exit_3(tiny_checkpoints, tmp_path, capsys):
    env = {"MODEL": str(tiny_checkpoints / "stripped")}
    code, err = preflight_only(tmp_path, "cpu", env, capsys)
    line = err.strip().splitlines()[-1]
    assert code == 3 and "Traceback" not in err
    assert line.startswith("[dsv4-flash] error: MTP speculative decoding requested (NUM_SPECULATIVE_TOKENS=2) but "
                           f"checkpoint {env['MODEL']} is refused: {env['MODEL']}/model.safetensors: holds no MTP tensors")
    assert line.endswith("set NUM_SPECULATIVE_TOKENS=0.")
    assert preflight_only(tmp_path, "cpu", {**env, "NUM_SPECULATIVE_TOKENS": "0"}, capsys)[0] == 0
    assert preflight_only(tmp_path, "cpu", {**env, "DSV4_SKIP_PREFLIGHT": "1"}, capsys)[0] == 0


@pytest.mark.parametrize("case", ["dspark", "truncated-header", "fp8-mtp", "no-nextn"])
def test_preflight_refusals_name_the_file_and_the_reason(tmp_path, capsys, case):
    from tests.unit.checkpoint_fixtures import DSPARK_CONFIG, V4_CONFIG, dspark_stages, v4_checkpoint, v4_mtp_stage
    root, shard = tmp_path / "m", "model-00002-of-00002.safetensors"
    if case == "dspark":
        v4_checkpoint(root, mtp=dspark_stages(), config=DSPARK_CONFIG)
        file, reason = root / "model.safetensors.index.json", "this is a DSpark drafter"
    elif case == "truncated-header":
        v4_checkpoint(root)
        (root / shard).write_bytes((root / shard).read_bytes()[:40])
        file, reason = root / shard, "is truncated: header says"
    elif case == "fp8-mtp":
        v4_checkpoint(root, mtp=v4_mtp_stage(dtype="F8_E4M3"))
        file, reason = root / shard, "is F8_E4M3 but canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP expects BF16/F32"
    else:
        v4_checkpoint(root, config={**V4_CONFIG, "num_nextn_predict_layers": 0})
        file, reason = root / "config.json", "num_nextn_predict_layers is 0"
    env = {"MODEL": str(root), "DSV4_CHECKPOINT_PROFILE": "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP"}
    code, err = preflight_only(tmp_path, "sm100", env, capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 3 and len(errors) == 1 and "Traceback" not in err
    assert f"is refused: {file}: " in errors[0] and reason in errors[0]


def test_the_checkpoint_profile_comes_from_the_environment_or_the_targets_own_model():
    d = defaults("sm100")
    d["serve"]["checkpoint_profile"] = "DeepseekV4ForCausalLM"
    serve = ep.effective_settings(d, {})
    assert ep.checkpoint_profile(d, serve, {}) == "DeepseekV4ForCausalLM"
    other = ep.effective_settings(d, {"MODEL": "/models/other"})
    assert ep.checkpoint_profile(d, other, {}) is None  # another model: chosen by its id or architecture
    env = {"DSV4_CHECKPOINT_PROFILE": "canada-quant/DeepSeek-V4-Flash-W4A16-FP8-MTP"}
    assert ep.checkpoint_profile(d, other, env) == env["DSV4_CHECKPOINT_PROFILE"]
    with pytest.raises(ep.EntrypointError) as exc:
        ep.checkpoint_profile(d, serve, {"DSV4_CHECKPOINT_PROFILE": "W4A16"})
    assert exc.value.exit_code == 2 and "DSV4_CHECKPOINT_PROFILE='W4A16' is not one of" in str(exc.value)


def test_a_case_the_checkpoint_module_does_not_know_is_not_checked_rather_than_a_traceback(monkeypatch):
    def broken(*args):
        raise TypeError("unexpected\nthing")
    monkeypatch.setattr(ep.checkpoint, "check_mtp", broken)
    assert ep.check_mtp_tensors("/models/x", {}) == "not checked (the preflight failed on it: TypeError: unexpected thing)"


def test_preflight_does_not_refuse_what_it_cannot_read(tmp_path):
    env = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    assert ep.check_mtp_tensors("canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP", env).startswith("not checked")


def test_the_entrypoint_runs_from_the_image_layout(tiny_checkpoints, tmp_path):
    """In the image entrypoint.py and checkpoint.py sit side by side in /opt/dsv4-flash/ with no
    dsv4_images package: the script must import its sibling and refuse or pass as on the host."""
    opt = tmp_path / "opt"
    opt.mkdir()
    for rel in matrix.IN_IMAGE_FILES:
        if rel.endswith(".py"):
            shutil.copy(REPO_ROOT / rel, opt / Path(rel).name)
    (tmp_path / "serve.json").write_text(json.dumps(defaults("cpu")))
    env = {"PATH": os.environ["PATH"], "DSV4_DEFAULTS": str(tmp_path / "serve.json"), "HOME": str(tmp_path)}

    def run(model: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-E", "-s", str(opt / "entrypoint.py"), "--preflight-only"],
                              env={**env, "MODEL": model}, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    ok, stripped = run(str(tiny_checkpoints / "with-mtp")), run(str(tiny_checkpoints / "stripped"))
    assert ok.returncode == 0 and "44 MTP tensors found" in ok.stderr, ok.stderr
    assert stripped.returncode == 3 and "holds no MTP tensors" in stripped.stderr and "Traceback" not in stripped.stderr


# ---- preflight: GPU --------------------------------------------------------------------------

def test_gpu_warnings():
    d, serve = defaults("sm100"), ep.effective_settings(defaults("sm100"), {})
    assert ep.gpu_warnings(d, serve, ["10.3", "10.3", "10.0", "10.0"]) == []
    warnings = ep.gpu_warnings(d, serve, ["12.0", "12.0"])
    assert any("compute capability 12.0, this image is built for 10.0/10.3" in w for w in warnings)
    assert any("2 GPU(s) visible but TENSOR_PARALLEL_SIZE=4" in w for w in warnings)
    assert "no NVIDIA GPU visible" in ep.gpu_warnings(d, serve, None)[0]
    assert ep.gpu_warnings(defaults("cpu"), ep.effective_settings(defaults("cpu"), {}), None) == []


def test_no_removed_vllm_environment_variable_is_set():
    text = Path(ep.__file__).read_text() + "".join(json.dumps(t.serve_defaults()) for t in M.targets.values())
    assert "VLLM_TEST_FORCE_FP8_MARLIN" not in text


# ---- another model a target knows (serve.models) -------------------------------------------------

W4A16 = "canada-quant/DeepSeek-V4-Flash-W4A16-FP8-MTP"


def _last(cmd: list[str], name: str) -> str | None:
    """The value vLLM takes: the last occurrence of the flag."""
    values = [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == name]
    return values[-1] if values else None


def test_the_w4a16_sibling_gets_its_own_serve_defaults_and_preflight_profile():
    nvfp4 = command("sm120")
    assert _last(nvfp4, "--moe-backend") == "auto" and nvfp4[2] == "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP"
    env = {"MODEL": W4A16}
    w4a16 = command("sm120", env)
    assert w4a16[2] == W4A16 and _last(w4a16, "--moe-backend") == "marlin"
    assert _last(w4a16, "--attention-config.indexer_kv_dtype") == "fp8"
    assert _last(w4a16, "--tensor-parallel-size") == "2"  # the target's other defaults stand
    serve = ep.effective_settings(defaults("sm120"), env)
    assert ep.checkpoint_profile(defaults("sm120"), serve, env) == W4A16
    assert W4A16 in ep.checkpoint.PROFILES
    # the user's own settings still win over the model's defaults
    mine = command("sm120", {**env, "VLLM_EXTRA_ARGS": "--moe-backend cutlass"})
    assert _last(mine, "--moe-backend") == "cutlass"


def test_a_model_the_target_does_not_know_gets_no_borrowed_profile(tmp_path):
    other = tmp_path / "my-model"
    other.mkdir()
    (other / "config.json").write_text("{}")
    env = {"MODEL": str(other)}
    serve = ep.effective_settings(defaults("sm120"), env)
    assert "checkpoint_profile" not in serve and ep.checkpoint_profile(defaults("sm120"), serve, env) is None
    assert _last(ep.build_command(serve, []), "--moe-backend") == "auto"


def test_serving_names_an_unwritable_cache_mount_before_the_variables_under_it(tmp_path, capsys, monkeypatch):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("cpu")))
    home = tmp_path / "home"
    (home / ".cache").mkdir(parents=True)
    env = {"HOME": str(home), "HF_HOME": str(home / ".cache" / "huggingface")}
    monkeypatch.setattr(ep.runtime, "_writable", lambda p: p != home / ".cache")  # as a host mount owned by another uid
    assert ep.main([], env, path) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"[dsv4-flash] error: the cache directory {home / '.cache'} is not writable (owned by uid")
    assert "HF_HOME" not in err and "\n" not in err


def test_serving_checks_home_itself_before_its_cache(tmp_path, capsys, monkeypatch):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("cpu")))
    monkeypatch.chdir(tmp_path)
    assert ep.main([], {"HOME": "relative"}, path) == 2
    assert "HOME='relative' is not an absolute path" in capsys.readouterr().err
    assert not (tmp_path / "relative").exists()  # nothing made under a relative HOME


# ---- MODEL_REVISION: what the preflight checks is what vLLM serves ----------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_model_revision_reaches_vllm_for_the_weights_and_the_tokenizer():
    cmd = command("sm100", {"MODEL_REVISION": COMMIT})
    assert _last(cmd, "--revision") == COMMIT and _last(cmd, "--tokenizer-revision") == COMMIT
    assert "--revision" not in command("sm100") and "--tokenizer-revision" not in command("sm100")
    w4a16 = command("sm120", {"MODEL": W4A16, "MODEL_REVISION": "v2"})  # a known alternative model too
    assert _last(w4a16, "--revision") == "v2" and _last(w4a16, "--tokenizer-revision") == "v2"


@pytest.mark.parametrize("user", [["--revision", "v9"], ["--revision=v9"], ["--revision_x"], ["--revision", "v9", "--seed", "1"]])
def test_a_revision_after_the_image_name_wins_and_takes_the_tokenizer_with_it(user):
    cmd = command("sm100", {"MODEL_REVISION": COMMIT}, user)
    if user == ["--revision_x"]:  # not the flag: ours stand
        assert ep.served_revision(cmd) == COMMIT and _last(cmd, "--tokenizer-revision") == COMMIT
        return
    assert ep.served_revision(cmd) == "v9"
    # vLLM pins the tokenizer to the revision it serves when none is given: no stale --tokenizer-revision of ours
    assert "--tokenizer-revision" not in cmd
    assert cmd.index("--revision") < len(cmd) - len(user)  # ours is still there; the user's comes later


@pytest.mark.parametrize("where", ["argv", "VLLM_EXTRA_ARGS"])
@pytest.mark.parametrize("user", [["--tokenizer-revision", "t1"], ["--tokenizer_revision=t1"], ["--tokenizer", "other/tok"]])
def test_the_users_tokenizer_flags_are_not_contradicted(where, user):
    env = {"MODEL_REVISION": COMMIT}
    if where == "VLLM_EXTRA_ARGS":
        cmd = command("sm100", {**env, "VLLM_EXTRA_ARGS": shlex.join(user)})
    else:
        cmd = command("sm100", env, user)
    assert ep.served_revision(cmd) == COMMIT
    assert "--tokenizer-revision" not in cmd[:len(cmd) - len(user)]  # only the user's, if any


def test_a_path_model_gets_no_revision_and_a_warning(tmp_path, capsys):
    assert "--revision" not in command("cpu", {"MODEL_REVISION": "v2"})  # the baked tiny model is a path
    assert "--revision" not in command("sm100", {"MODEL": "/models/x", "MODEL_REVISION": "v2"})
    assert "--revision" not in command("sm100", {"MODEL": "./models/x", "MODEL_REVISION": "v2"})
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("sm100")))
    assert ep.main(["--print-command"], {"MODEL": "/models/x", "MODEL_REVISION": "v2"}, path) == 0
    captured = capsys.readouterr()
    assert "--revision" not in captured.out
    assert ("[dsv4-flash] warning: MODEL_REVISION='v2' is not passed to vLLM: MODEL /models/x is a path" in captured.err)


def test_print_command_shows_the_revision_served(tmp_path, capsys):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("sm120")))
    assert ep.main(["--print-command"], {"MODEL_REVISION": COMMIT}, path) == 0
    out = shlex.split(capsys.readouterr().out.strip())
    assert out == command("sm120", {"MODEL_REVISION": COMMIT})
    assert _last(out, "--revision") == COMMIT and _last(out, "--tokenizer-revision") == COMMIT
    assert ep.main(["--print-command", "--revision", "v9"], {"MODEL_REVISION": COMMIT}, path) == 0
    out = shlex.split(capsys.readouterr().out.strip())
    assert _last(out, "--revision") == "v9" and "--tokenizer-revision" not in out


@pytest.mark.parametrize("env,argv,checked", [
    ({"MODEL_REVISION": COMMIT}, [], COMMIT),
    ({"MODEL_REVISION": COMMIT}, ["--revision", "v9"], "v9"),   # the preflight checks what is served
    ({}, ["--revision=v9"], "v9"),
    ({}, [], None),
])
def test_the_preflight_checks_the_revision_vllm_serves(tmp_path, capsys, monkeypatch, env, argv, checked):
    seen = []
    monkeypatch.setattr(ep.checkpoint, "check_mtp", lambda model, env_, profile: seen.append(env_.get("MODEL_REVISION")) or "ok")
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("sm100")))
    assert ep.main(["--preflight-only", *argv], env, path) == 0
    assert seen == [checked]


def test_a_path_models_preflight_gets_no_revision(tiny_checkpoints, tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(ep.checkpoint, "check_mtp", lambda model, env_, profile: seen.append(env_.get("MODEL_REVISION")) or "ok")
    path = tmp_path / "serve.json"
    path.write_text(json.dumps(defaults("cpu")))
    assert ep.main(["--preflight-only"], {"MODEL": str(tiny_checkpoints / "with-mtp"), "MODEL_REVISION": "v2"}, path) == 0
    assert seen == [None]
