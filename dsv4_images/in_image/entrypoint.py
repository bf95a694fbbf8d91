"""The serve entrypoint baked into every dsv4-flash image (standard library only).

    docker run IMAGE [extra `vllm serve` arguments...]

Builds the `vllm serve` command from the image's target defaults (/etc/dsv4-flash/serve.json,
rendered from matrix.toml), applies environment overrides, appends the extra arguments (vLLM
takes the last occurrence of a flag, so they win), prints the command and execs vLLM so that
signals reach it directly.

Environment overrides: MODEL, SERVED_MODEL_NAME, TENSOR_PARALLEL_SIZE, NUM_SPECULATIVE_TOKENS
(0 turns MTP off), MAX_MODEL_LEN, PORT, HOST, MAX_NUM_SEQS, MAX_NUM_BATCHED_TOKENS,
KV_CACHE_DTYPE, VLLM_EXTRA_ARGS (shell-quoted), DSV4_SKIP_PREFLIGHT=1, DSV4_CHECKPOINT_PROFILE
(a key of checkpoint.PROFILES: what the preflight expects of the checkpoint).

Preflight, before vLLM starts: when MTP is requested the checkpoint must hold an MTP block its
profile accepts (checkpoint.py: no stripped, DSpark, mis-numbered or unexpectedly quantized MTP
block, no malformed index or header; refuses with exit 3 in one line), and on GPU targets a GPU
whose compute capability is not the image's target gets a warning. Other modes: --print-command,
--preflight-only, --healthcheck.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

try:  # a sibling module: dsv4_images.in_image on the host, /opt/dsv4-flash/ in the image
    from . import checkpoint
except ImportError:
    import checkpoint

DEFAULTS_PATH = Path(os.environ.get("DSV4_DEFAULTS", "/etc/dsv4-flash/serve.json"))
EXIT_BAD_OVERRIDE = 2
EXIT_PREFLIGHT = 3


class EntrypointError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# ---- configuration -------------------------------------------------------------------------

INT_OVERRIDES = {  # env var -> (serve key, minimum)
    "TENSOR_PARALLEL_SIZE": ("tensor_parallel_size", 1),
    "NUM_SPECULATIVE_TOKENS": ("num_speculative_tokens", 0),
    "MAX_MODEL_LEN": ("max_model_len", 1),
    "PORT": ("port", 1),
    "MAX_NUM_SEQS": ("max_num_seqs", 1),
    "MAX_NUM_BATCHED_TOKENS": ("max_num_batched_tokens", 1),
}
STR_OVERRIDES = {"MODEL": "model", "SERVED_MODEL_NAME": "served_model_name", "HOST": "host",
                 "KV_CACHE_DTYPE": "kv_cache_dtype"}


def _int_from_env(name: str, value: str, minimum: int) -> int:
    try:
        number = int(value.strip(), 10)
    except ValueError:
        number = None
    if number is None or number < minimum or (name == "PORT" and number > 65535):
        bound = "between 1 and 65535" if name == "PORT" else f">= {minimum}"
        raise EntrypointError(f"{name}={value!r} is not an integer {bound}", EXIT_BAD_OVERRIDE)
    return number


def effective_settings(defaults: dict, env: dict) -> dict:
    """The target's serve defaults with the environment's overrides applied and checked."""
    serve = dict(defaults["serve"])
    serve.setdefault("host", "0.0.0.0")
    for name, key in STR_OVERRIDES.items():
        if name in env:
            if not env[name].strip():
                raise EntrypointError(f"{name} is set but empty", EXIT_BAD_OVERRIDE)
            serve[key] = env[name].strip()
    for name, (key, minimum) in INT_OVERRIDES.items():
        if name in env:
            serve[key] = _int_from_env(name, env[name], minimum)
    try:
        serve["extra_args"] = list(serve.get("extra_args", [])) + shlex.split(env.get("VLLM_EXTRA_ARGS", ""))
    except ValueError as exc:
        raise EntrypointError(f"VLLM_EXTRA_ARGS cannot be parsed: {exc}", EXIT_BAD_OVERRIDE) from None
    return serve


def capture_sizes(batch_sizes: list[int], num_speculative_tokens: int) -> list[int]:
    """CUDA-graph capture sizes: each batch size times (k+1) tokens, so all are multiples of k+1."""
    return [b * (num_speculative_tokens + 1) for b in batch_sizes]


def build_command(serve: dict, passthrough: list[str]) -> list[str]:
    cmd = ["vllm", "serve", serve["model"], "--host", serve["host"], "--port", str(serve["port"]),
           "--tensor-parallel-size", str(serve["tensor_parallel_size"]),
           "--max-model-len", str(serve["max_model_len"])]
    valued = ["served_model_name", "dtype", "kv_cache_dtype", "block_size", "tokenizer_mode",
              "reasoning_parser", "tool_call_parser", "max_num_seqs", "max_num_batched_tokens"]
    for key in valued:
        if serve.get(key) is not None:
            cmd += ["--" + key.replace("_", "-"), str(serve[key])]
    for flag in ("enable_auto_tool_choice", "trust_remote_code", "disable_custom_all_reduce"):
        if serve.get(flag):
            cmd.append("--" + flag.replace("_", "-"))
    k = serve["num_speculative_tokens"]
    if k > 0:
        spec = json.dumps({"method": "mtp", "num_speculative_tokens": k}, separators=(",", ":"))
        cmd += ["--speculative-config", spec]
    if serve.get("cudagraph_batch_sizes"):
        cmd += ["--cudagraph-capture-sizes", *map(str, capture_sizes(serve["cudagraph_batch_sizes"], k))]
    return cmd + list(serve.get("extra_args", [])) + list(passthrough)


# ---- preflight: the checkpoint (checkpoint.py holds what we know about checkpoints) -------------

def checkpoint_profile(defaults: dict, serve: dict, env: dict) -> str | None:
    """DSV4_CHECKPOINT_PROFILE, else the target's `checkpoint_profile` while MODEL is the target's own;
    None lets checkpoint.py choose by model id, then by architecture."""
    if env.get("DSV4_CHECKPOINT_PROFILE", "").strip():
        name = env["DSV4_CHECKPOINT_PROFILE"].strip()
        if name not in checkpoint.PROFILES:
            raise EntrypointError(f"DSV4_CHECKPOINT_PROFILE={name!r} is not one of "
                                  f"{', '.join(sorted(checkpoint.PROFILES))}", EXIT_BAD_OVERRIDE)
        return name
    if serve["model"] == defaults.get("serve", {}).get("model"):
        return defaults["serve"].get("checkpoint_profile")
    return None


def check_mtp_tensors(model: str, env: dict, profile: str | None = None, k: int = 1) -> str:
    """Raise (exit 3) when the checkpoint cannot serve MTP as its profile expects; return what was found."""
    try:
        return checkpoint.check_mtp(model, env, profile)
    except checkpoint.Refusal as refusal:
        raise EntrypointError(
            f"MTP speculative decoding requested (NUM_SPECULATIVE_TOKENS={k}) but checkpoint {model} is refused: "
            f"{refusal}. Use a checkpoint whose MTP block fits, or set NUM_SPECULATIVE_TOKENS=0.",
            EXIT_PREFLIGHT) from None
    except Exception as exc:  # a case checkpoint.py does not know: say so, and let vLLM decide
        return f"not checked (the preflight failed on it: {type(exc).__name__}: {' '.join(str(exc).split())[:200]})"


# ---- preflight: GPU --------------------------------------------------------------------------

def gpu_compute_capabilities() -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_warnings(defaults: dict, serve: dict, capabilities: list[str] | None) -> list[str]:
    if defaults.get("kind") != "cuda":
        return []
    wanted = defaults.get("compute_capabilities", [])
    if capabilities is None:
        return [f"no NVIDIA GPU visible (nvidia-smi not usable); this image is built for compute capability "
                f"{'/'.join(wanted)} (run with --gpus all)"]
    warnings = [f"GPU {i} has compute capability {cap}, this image is built for {'/'.join(wanted)} "
                f"(target {defaults['target']}); kernels may be missing or slow"
                for i, cap in enumerate(capabilities) if cap not in wanted]
    if len(capabilities) < serve["tensor_parallel_size"]:
        warnings.append(f"{len(capabilities)} GPU(s) visible but TENSOR_PARALLEL_SIZE={serve['tensor_parallel_size']}")
    return warnings


def preflight(defaults: dict, serve: dict, env: dict) -> None:
    if serve["num_speculative_tokens"] > 0:
        k = serve["num_speculative_tokens"]
        found = check_mtp_tensors(serve["model"], env, checkpoint_profile(defaults, serve, env), k)
        print(f"[dsv4-flash] preflight: MTP k={k}: {found}", file=sys.stderr)
    for warning in gpu_warnings(defaults, serve, gpu_compute_capabilities()):
        print(f"[dsv4-flash] warning: {warning}", file=sys.stderr)


def healthcheck(env: dict, defaults_path: Path) -> int:
    try:
        port = effective_settings(json.loads(defaults_path.read_text()), env)["port"]
    except (OSError, ValueError, EntrypointError):
        return 1
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


def main(argv: list[str] | None = None, env: dict | None = None, defaults_path: Path = DEFAULTS_PATH) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if env is None else env)
    if argv[:1] == ["--healthcheck"]:
        return healthcheck(env, defaults_path)
    mode = argv.pop(0) if argv[:1] in (["--print-command"], ["--preflight-only"]) else "serve"
    try:
        defaults = json.loads(defaults_path.read_text())
        serve = effective_settings(defaults, env)
        command = build_command(serve, argv)
        print("[dsv4-flash] " + shlex.join(command), file=sys.stderr, flush=True)
        if mode == "--print-command":
            print(shlex.join(command))
            return 0
        if env.get("DSV4_SKIP_PREFLIGHT", "0") in ("", "0"):
            preflight(defaults, serve, env)
        if mode == "--preflight-only":
            return 0
    except EntrypointError as exc:
        print(f"[dsv4-flash] error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, ValueError) as exc:
        print(f"[dsv4-flash] error: cannot read the image's serve defaults {defaults_path}: {exc}", file=sys.stderr)
        return EXIT_BAD_OVERRIDE
    sys.stderr.flush()
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
