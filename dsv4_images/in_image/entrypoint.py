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
whose compute capability is not the image's target gets a warning. runtime.py checks /dev/shm and
the cache directory (one line and exit 2 when they cannot serve), keys the compile caches to the
image and redacts secrets from everything printed here.

The image puts this on PATH as `dsv4-serve`. Other modes: --print-command, --preflight-only,
--healthcheck (GET /health on the port the server really uses), --ready (the served model is
listed and answers a 1-token completion: what startup and readiness probes should ask).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

try:  # sibling modules: dsv4_images.in_image on the host, /opt/dsv4-flash/ in the image
    from . import checkpoint, runtime
except ImportError:
    import checkpoint
    import runtime

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


def preflight(defaults: dict, serve: dict, env: dict, say) -> None:
    if serve["num_speculative_tokens"] > 0:
        k = serve["num_speculative_tokens"]
        found = check_mtp_tensors(serve["model"], env, checkpoint_profile(defaults, serve, env), k)
        say(f"preflight: MTP k={k}: {found}")
    for warning in gpu_warnings(defaults, serve, gpu_compute_capabilities()):
        say(f"warning: {warning}")


def probe(ready: bool, env: dict, defaults_path: Path) -> int:
    """Exit 0 when the server answers: the recorded one, else the one the defaults and env describe."""
    info = runtime.recorded()
    if info is None:
        try:
            serve = effective_settings(json.loads(defaults_path.read_text()), env)
        except (OSError, ValueError, EntrypointError):
            return 1
        info = {"port": serve["port"], "model": serve.get("served_model_name") or serve["model"],
                "api_key": env.get("VLLM_API_KEY")}
    return 0 if runtime.probe(info, ready) else 1


MODES = ("--print-command", "--preflight-only")


def main(argv: list[str] | None = None, env: dict | None = None, defaults_path: Path = DEFAULTS_PATH) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if env is None else env)
    if argv[:1] in (["--healthcheck"], ["--ready"]):
        return probe(argv[0] == "--ready", env, defaults_path)
    mode = argv.pop(0) if argv[:1] and argv[0] in MODES else "serve"
    secrets: list[str] = runtime.secret_values(env, argv)

    def say(line: str) -> None:
        print(runtime.redact(f"[dsv4-flash] {line}", secrets), file=sys.stderr, flush=True)

    try:
        defaults = json.loads(defaults_path.read_text())
    except (OSError, ValueError) as exc:
        say(f"error: cannot read the image's serve defaults {defaults_path}: {exc}")
        return EXIT_BAD_OVERRIDE
    try:
        serve = effective_settings(defaults, env)
        command = build_command(serve, argv)
        secrets = runtime.secret_values(env, command)
        shown = runtime.redact(shlex.join(runtime.redact_command(command)), secrets)
        say(shown)
        if mode == "--print-command":
            print(shown)
            return 0
        if env.get("DSV4_SKIP_PREFLIGHT", "0") in ("", "0"):
            preflight(defaults, serve, env, say)
        if mode == "--preflight-only":
            return 0
        runtime.check_shm(serve.get("min_shm_mb"), env)
        # Group-writable from here on (vLLM inherits it): replicas running under other UIDs in group 0
        # share the cache volume, as OpenShift and our Compose and Kubernetes files run them.
        os.umask(0o002)
        cache_env, notes = runtime.prepare_caches(env, defaults.get("build_id", "unknown"))
        for note in notes:
            say(note)
        runtime.record(serve, command, env)
    except (EntrypointError, runtime.EnvironmentProblem) as exc:
        say(f"error: {exc}")
        return exc.exit_code
    except OSError as exc:  # /tmp or the cache volume refused a write
        say(f"error: cannot prepare the container: {exc}")
        return EXIT_BAD_OVERRIDE
    sys.stderr.flush()
    os.execvpe(command[0], command, {**env, **cache_env})
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
