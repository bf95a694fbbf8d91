"""The serve entrypoint baked into every dsv4-flash image (standard library only).

    docker run IMAGE [extra `vllm serve` arguments...]

Builds the `vllm serve` command from the image's target defaults (/etc/dsv4-flash/serve.json,
rendered from matrix.toml), applies environment overrides, appends the extra arguments (vLLM
takes the last occurrence of a flag, so they win), prints the command and execs vLLM so that
signals reach it directly.

Environment overrides: MODEL, MODEL_REVISION (a Hugging Face id's branch, tag or commit: the preflight
checks it and vLLM serves it, as --revision and --tokenizer-revision; not for a path MODEL),
SERVED_MODEL_NAME, TENSOR_PARALLEL_SIZE, NUM_SPECULATIVE_TOKENS (0 turns MTP off), MAX_MODEL_LEN, PORT, HOST, MAX_NUM_SEQS, MAX_NUM_BATCHED_TOKENS,
KV_CACHE_DTYPE, VLLM_EXTRA_ARGS (shell-quoted), DSV4_SKIP_PREFLIGHT=1, DSV4_CHECKPOINT_PROFILE
(a key of checkpoint.PROFILES: what the preflight expects of the checkpoint).

Every variable read here is checked before anything else happens; a refused one is one line and
exit 2. Set means set: an empty or space-padded value is refused (VLLM_EXTRA_ARGS alone may be
empty: no extra arguments). Numbers are ASCII digits in the range INT_OVERRIDES states
(NUM_SPECULATIVE_TOKENS 0-8, see MAX_K; PORT 1-65535); MODEL is a path (which must exist when
serving) or a Hugging Face id; HOST an address or host name; switches 0/1; paths absolute. What
only vLLM can judge (the names of its flags in VLLM_EXTRA_ARGS, a KV_CACHE_DTYPE a platform plugin
adds) is left to it: it refuses them when it parses its arguments, before loading anything.

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

import ipaddress
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

try:  # sibling modules: dsv4_images.in_image on the host, /opt/dsv4-flash/ in the image
    from . import checkpoint, runtime
except ImportError:
    import checkpoint
    import runtime

DEFAULTS_PATH = Path("/etc/dsv4-flash/serve.json")  # or $DSV4_DEFAULTS
EXIT_BAD_OVERRIDE = 2
EXIT_PREFLIGHT = 3


class EntrypointError(Exception):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# ---- configuration: every variable read here, checked (one line and exit 2 when refused) ---------

INT32_MAX = 2**31 - 1
INT_OVERRIDES = {  # env var -> (serve key, minimum, maximum)
    "TENSOR_PARALLEL_SIZE": ("tensor_parallel_size", 1, 64),            # 8 nodes of 8 GPUs
    "NUM_SPECULATIVE_TOKENS": ("num_speculative_tokens", 0, 8),         # 0: MTP off; see MAX_K below
    "MAX_MODEL_LEN": ("max_model_len", 1, INT32_MAX),                   # vLLM indexes tokens with int32
    "PORT": ("port", 1, 65535),
    "MAX_NUM_SEQS": ("max_num_seqs", 1, 65536),                         # per-sequence state is allocated up front
    "MAX_NUM_BATCHED_TOKENS": ("max_num_batched_tokens", 1, INT32_MAX),
}
# MAX_K: DeepSeek-V4 has one MTP layer, which vLLM applies k times in a row; acceptance of the k-th draft
# falls with k (the model card's targets use 1 and 2), so k above 8 only costs compute and is refused
# as a likely typo. What a target's checkpoint and kernels allow below that is vLLM's to say at start-up.
MAX_K = INT_OVERRIDES["NUM_SPECULATIVE_TOKENS"][2]
STR_OVERRIDES = {"MODEL": "model", "SERVED_MODEL_NAME": "served_model_name", "HOST": "host",
                 "KV_CACHE_DTYPE": "kv_cache_dtype"}
_HF_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"  # 96 at most, no - or . at either end
HF_REPO_ID = re.compile(rf"(?!.*(?:--|\.\.)){_HF_NAME}(?:/{_HF_NAME})?")
HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
REVISION = re.compile(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}")
FLAGS = ("DSV4_SKIP_PREFLIGHT", "DSV4_SKIP_SHM_CHECK")                  # 0/1 (also false/true, no/yes)
DIRECTORIES = ("HOME", "HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME")
PATHS = (*DIRECTORIES, "DSV4_DEFAULTS", "DSV4_RUNTIME_FILE")
HF_OFFLINE_VALUES = ("0", "1", "false", "true", "no", "yes", "off", "on")  # what huggingface_hub reads


def _int_from_env(name: str, value: str, minimum: int, maximum: int) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 12) or not minimum <= int(value) <= maximum:
        raise EntrypointError(f"{name}={_shown(value)} is not an integer between {minimum} and {maximum}"
                              f"{' (ASCII digits only)' if not value.isascii() else ''}", EXIT_BAD_OVERRIDE)
    return int(value)


def _shown(value: str, limit: int = 60) -> str:
    return repr(value[:limit]) + (f"... ({len(value)} characters)" if len(value) > limit else "")


def _text(name: str, value: str) -> str:
    """A set variable's value: not empty, no surrounding spaces, no control characters."""
    if not value.strip():
        raise EntrypointError(f"{name} is set but empty", EXIT_BAD_OVERRIDE)
    if value != value.strip() or not value.isprintable():
        raise EntrypointError(f"{name}={_shown(value)} has surrounding spaces or control characters", EXIT_BAD_OVERRIDE)
    return value


def _string_override(name: str, value: str) -> str:
    value = _text(name, value)
    bad = None
    if name == "MODEL" and not value.startswith(("/", "./", "../")) and not HF_REPO_ID.fullmatch(value):
        bad = "is neither a path (/..., ./...) nor a Hugging Face model id (owner/name)"
    elif name == "SERVED_MODEL_NAME" and (len(value) > 256 or value.startswith("-") or any(c.isspace() for c in value)):
        bad = "is not a name of at most 256 characters without spaces (not starting with -)"
    elif name == "HOST":
        bad = _listen_problem(value)
    elif name == "KV_CACHE_DTYPE" and not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", value):
        bad = "is not a vLLM cache dtype name (auto, fp8, bfloat16, ...)"
    if bad:
        raise EntrypointError(f"{name}={_shown(value)} {bad}", EXIT_BAD_OVERRIDE)
    return value


def _listen_problem(host: str) -> str | None:
    """Why vLLM could not listen on `host` (None: it can): an address of this machine, or a name for one."""
    if not (HOSTNAME.fullmatch(host) or _is_ip(host)):
        return "is not an IP address or host name"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address[:2])
    except OSError as exc:
        return f"cannot be listened on here ({exc.strerror or exc})"
    return None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def extra_args(env: dict) -> list[str]:
    """VLLM_EXTRA_ARGS, shell-quoted (unset, empty or only spaces: none); it must start with an option."""
    text = env.get("VLLM_EXTRA_ARGS", "")
    if any(not c.isprintable() and c not in "\n\t" for c in text):
        raise EntrypointError(f"VLLM_EXTRA_ARGS={_shown(text)} holds control characters", EXIT_BAD_OVERRIDE)
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise EntrypointError(f"VLLM_EXTRA_ARGS cannot be parsed: {exc} (shell quoting: "
                              f"VLLM_EXTRA_ARGS='--flag \"a b\"')", EXIT_BAD_OVERRIDE) from None
    if args and not re.match(r"-{1,2}[A-Za-z]", args[0]):
        raise EntrypointError(f"VLLM_EXTRA_ARGS starts with {_shown(args[0])}, not an option (--flag)", EXIT_BAD_OVERRIDE)
    return args


def _path_problem(name: str, value: str) -> str | None:
    """An absolute path; a directory variable must be a directory or creatable, a file's parent must be one."""
    if not _text(name, value).startswith("/"):
        return "is not an absolute path"
    path = Path(value)
    try:
        if name in DIRECTORIES and path.exists():
            return None if path.is_dir() else "is not a directory"
        if name not in DIRECTORIES and path.is_dir():
            return "is a directory, not a file"
        missing = path if name in DIRECTORIES else path.parent
        while not missing.parent.exists():
            missing = missing.parent
        if missing.exists():
            return None if missing.is_dir() else f"is under {missing}, which is not a directory"
        if not missing.parent.is_dir():
            return f"is under {missing.parent}, which is not a directory"
        missing.mkdir()
        missing.rmdir()
    except OSError as exc:
        return f"cannot be made: {exc.strerror or exc}"
    return None


def check_environment(env: dict, serving: bool = False) -> None:
    """The variables read outside the serve settings: switches, paths, the checkpoint's profile and
    revision, the API key. A cache directory may exist read-only (a pre-filled cache, HF_HUB_OFFLINE=1).
    When serving, $HOME/.cache must be writable, checked right after HOME itself: HF_HOME and the other
    defaults live under it, and an unwritable mount there is best named as the mount."""
    for name in FLAGS:
        if name in env:
            runtime.flag(env, name)
    for name in PATHS:
        if name == "HF_HOME" and serving:
            runtime.cache_root(env)
        problem = _path_problem(name, env[name]) if name in env else None
        if problem:
            raise EntrypointError(f"{name}={_shown(env[name])} {problem}", EXIT_BAD_OVERRIDE)
    if "MODEL_REVISION" in env and not REVISION.fullmatch(_text("MODEL_REVISION", env["MODEL_REVISION"])):
        raise EntrypointError(f"MODEL_REVISION={_shown(env['MODEL_REVISION'])} is not a branch, tag or commit",
                              EXIT_BAD_OVERRIDE)
    if "HF_HUB_OFFLINE" in env and env["HF_HUB_OFFLINE"].lower() not in HF_OFFLINE_VALUES:
        raise EntrypointError(f"HF_HUB_OFFLINE={_shown(env['HF_HUB_OFFLINE'])} is not one of "
                              f"{', '.join(HF_OFFLINE_VALUES)}", EXIT_BAD_OVERRIDE)
    if "DSV4_CHECKPOINT_PROFILE" in env:
        _profile(_text("DSV4_CHECKPOINT_PROFILE", env["DSV4_CHECKPOINT_PROFILE"]))
    if "VLLM_API_KEY" in env:
        _text("VLLM_API_KEY", env["VLLM_API_KEY"])


def _profile(name: str) -> str:
    if name not in checkpoint.PROFILES:
        raise EntrypointError(f"DSV4_CHECKPOINT_PROFILE={_shown(name)} is not one of "
                              f"{', '.join(sorted(checkpoint.PROFILES))}", EXIT_BAD_OVERRIDE)
    return name


def effective_settings(defaults: dict, env: dict) -> dict:
    """The target's serve defaults, then the defaults of the model MODEL names when the target knows it
    (serve.models: another checkpoint the image supports, with what it needs changed), then the
    environment's overrides, applied and checked."""
    serve = {k: v for k, v in defaults["serve"].items() if k != "models"}
    serve.setdefault("host", "0.0.0.0")
    if "MODEL" in env:
        serve["model"] = _string_override("MODEL", env["MODEL"])
    if serve["model"] != defaults["serve"]["model"]:
        serve.pop("checkpoint_profile", None)  # the default model's; another model brings its own, or none
    known = defaults["serve"].get("models") or {}
    if isinstance(known.get(serve["model"]), dict):
        serve.update(known[serve["model"]])
    for name, key in STR_OVERRIDES.items():
        if name in env:
            serve[key] = _string_override(name, env[name])
    for name, (key, minimum, maximum) in INT_OVERRIDES.items():
        if name in env:
            serve[key] = _int_from_env(name, env[name], minimum, maximum)
    if "MODEL_REVISION" in env and not is_path(serve["model"]):
        serve["revision"] = _text("MODEL_REVISION", env["MODEL_REVISION"])
    serve["extra_args"] = list(serve.get("extra_args", [])) + extra_args(env)
    return serve


def is_path(model: str) -> bool:
    """MODEL names a path (vLLM reads the directory; a revision means nothing there), not a Hugging Face id."""
    return model.startswith(("/", "./", "../"))


def _flag_name(name: str) -> str:
    """--flag_name and --flag-name are one flag to vLLM (short flags such as -dcp stay as they are)."""
    return "--" + name[2:].replace("_", "-") if name.startswith("--") else name


def _flag_values(args: list[str], *names: str) -> list[str]:
    """The values given to any of `names` (--flag value, --flag=value; vLLM also reads --flag_name)."""
    wanted = {_flag_name(n) for n in names}
    values = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if arg.startswith("-") and _flag_name(name) in wanted:
            if eq:
                values.append(value)
            elif i + 1 < len(args):
                values.append(args[i + 1])
    return values


def served_revision(command: list[str]) -> str | None:
    """The model revision vLLM will load: the last --revision in the command (vLLM takes the last one)."""
    values = _flag_values(command[3:], "--revision")
    return values[-1] if values else None


def check_defaults(defaults, path: Path) -> dict:
    """The image's serve.json: the keys and types build_command relies on (one line naming the first bad one)."""
    wanted = {"model": str, "port": int, "tensor_parallel_size": int, "max_model_len": int,
              "num_speculative_tokens": int}
    optional = {"extra_args": list, "cudagraph_batch_sizes": list, "min_shm_mb": int, "host": str, "speculative": dict}
    serve = defaults.get("serve") if isinstance(defaults, dict) else None
    if not isinstance(serve, dict):
        raise EntrypointError(f"the image's serve defaults {path} hold no \"serve\" table", EXIT_BAD_OVERRIDE)
    for key, kind in [*wanted.items(), *optional.items()]:
        value = serve.get(key)
        if (key in wanted or value is not None) and (not isinstance(value, kind) or isinstance(value, bool)):
            raise EntrypointError(f"the image's serve defaults {path}: serve.{key} is {_shown(repr(value))}, "
                                  f"not a {kind.__name__}", EXIT_BAD_OVERRIDE)
    lists = {"extra_args": str, "cudagraph_batch_sizes": int}
    for key, kind in lists.items():
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in serve.get(key) or []):
            raise EntrypointError(f"the image's serve defaults {path}: serve.{key} holds a non-{kind.__name__}",
                                  EXIT_BAD_OVERRIDE)
    return defaults


def capture_sizes(batch_sizes: list[int], num_speculative_tokens: int) -> list[int]:
    """CUDA-graph capture sizes: each batch size times (k+1) tokens, so all are multiples of k+1."""
    return [b * (num_speculative_tokens + 1) for b in batch_sizes]


def build_command(serve: dict, passthrough: list[str]) -> list[str]:
    cmd = ["vllm", "serve", serve["model"], "--host", serve["host"], "--port", str(serve["port"]),
           "--tensor-parallel-size", str(serve["tensor_parallel_size"]),
           "--max-model-len", str(serve["max_model_len"])]
    valued = ["served_model_name", "dtype", "kv_cache_dtype", "block_size", "tokenizer_mode",
              "reasoning_parser", "tool_call_parser", "tool_strict_level", "max_num_seqs", "max_num_batched_tokens"]
    for key in valued:
        if serve.get(key) is not None:
            cmd += ["--" + key.replace("_", "-"), str(serve[key])]
    for flag in ("enable_auto_tool_choice", "trust_remote_code", "disable_custom_all_reduce"):
        if serve.get(flag):
            cmd.append("--" + flag.replace("_", "-"))
    k = serve["num_speculative_tokens"]
    if k > 0:
        # plus the target's answers to known upstream issues (known_issues.toml), e.g. the draft's MoE backend
        spec = json.dumps({"method": "mtp", "num_speculative_tokens": k, **(serve.get("speculative") or {})},
                          separators=(",", ":"))
        cmd += ["--speculative-config", spec]
    if serve.get("cudagraph_batch_sizes"):
        cmd += ["--cudagraph-capture-sizes", *map(str, capture_sizes(serve["cudagraph_batch_sizes"], k))]
    user = list(serve.get("extra_args", [])) + list(passthrough)
    if serve.get("revision"):
        # MODEL_REVISION is what the preflight checked: vLLM must load the same commit, weights and tokenizer.
        # The user's own --revision/--tokenizer/--tokenizer-revision (later, so they win) take over the
        # tokenizer's too: vLLM then pins it to the revision it serves, not to ours.
        cmd += ["--revision", serve["revision"]]
        if not _flag_values(user, "--revision", "--tokenizer", "--tokenizer-revision"):
            cmd += ["--tokenizer-revision", serve["revision"]]
    cmd += user
    refuse_known_issues(cmd, k)
    return cmd


def refuse_known_issues(cmd: list[str], k: int) -> None:
    """Settings known_issues.toml answers with `refused`: one line, exit 2.
    rejection-synthetic: anything but standard rejection sampling changes the output distribution.
    mtp-dcp-full-graphs: MTP with decode context parallelism corrupts silently (vllm#45425)."""
    methods = _flag_values(cmd, "--speculative-config.rejection_sample_method")
    for text in _flag_values(cmd, "--speculative-config"):
        try:
            spec = json.loads(text)
        except ValueError:
            continue  # not JSON: vLLM's parser says what is wrong with it
        if isinstance(spec, dict) and "rejection_sample_method" in spec:
            methods.append(str(spec["rejection_sample_method"]))
    for method in methods:
        if method != "standard":
            raise EntrypointError(f"rejection_sample_method={_shown(method)} is refused: this image serves standard "
                                  "rejection sampling only (synthetic fakes acceptance, fly is lossy; known_issues.toml)",
                                  EXIT_BAD_OVERRIDE)
    for value in _flag_values(cmd, "--decode-context-parallel-size", "-dcp"):
        if k > 0 and value.strip() not in ("", "1"):
            raise EntrypointError(f"decode context parallelism ({_shown(value)}) with MTP is refused: it corrupts output "
                                  "silently (vllm#45425); set NUM_SPECULATIVE_TOKENS=0 to use it", EXIT_BAD_OVERRIDE)


# ---- preflight: the checkpoint (checkpoint.py holds what we know about checkpoints) -------------

def checkpoint_profile(defaults: dict, serve: dict, env: dict) -> str | None:
    """DSV4_CHECKPOINT_PROFILE, else the `checkpoint_profile` of the model served (the target's own, or a
    known alternative's); None lets checkpoint.py choose by model id, then by architecture."""
    if "DSV4_CHECKPOINT_PROFILE" in env:
        return _profile(_text("DSV4_CHECKPOINT_PROFILE", env["DSV4_CHECKPOINT_PROFILE"]))
    return serve.get("checkpoint_profile")  # the target's for its model, or a known alternative's (serve.models)


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

def _nvidia_smi(query: str) -> list[str] | None:
    """One value per GPU for an nvidia-smi --query-gpu field, or None when nvidia-smi is missing or fails."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_compute_capabilities() -> list[str] | None:
    return _nvidia_smi("compute_cap")


def gpu_driver_version() -> str | None:
    """The host driver's version as nvidia-smi reports it (the container toolkit mounts nvidia-smi), or None."""
    first = (_nvidia_smi("driver_version") or [""])[0]
    return first if re.fullmatch(r"\d+(\.\d+){1,2}", first) else None


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def check_driver(defaults: dict, found: str | None) -> None:
    """Refuse (exit 2) a host driver too old for the image's CUDA: this image carries no forward-compatibility
    libraries (NVIDIA's cuda-compat is in no wheel and no Debian package), so the driver must run it natively."""
    cuda = defaults.get("cuda")
    if defaults.get("kind") != "cuda" or not isinstance(cuda, dict) or found is None:
        return
    minimum = cuda.get("min_driver")
    if isinstance(minimum, str) and _version_key(found) < _version_key(minimum):
        raise EntrypointError(f"the host's NVIDIA driver is {found}; CUDA {cuda.get('release')} in this image needs "
                              f"{minimum} or newer (R{minimum.split('.')[0]}+, no forward-compatibility libraries "
                              "here): update the driver", EXIT_BAD_OVERRIDE)


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


def preflight(defaults: dict, serve: dict, env: dict, say, command: list[str] | None = None) -> None:
    if serve["num_speculative_tokens"] > 0:
        k = serve["num_speculative_tokens"]
        # check the revision vLLM is told to serve (a --revision after the image wins over MODEL_REVISION)
        revision = served_revision(command) if command else serve.get("revision")
        checked = {k_: v for k_, v in env.items() if k_ != "MODEL_REVISION"}
        if revision and not is_path(serve["model"]):
            checked["MODEL_REVISION"] = revision
        found = check_mtp_tensors(serve["model"], checked, checkpoint_profile(defaults, serve, env), k)
        say(f"preflight: MTP k={k}: {found}")
    check_driver(defaults, gpu_driver_version())
    for warning in gpu_warnings(defaults, serve, gpu_compute_capabilities()):
        say(f"warning: {warning}")


def probe(ready: bool, env: dict, defaults_path: Path) -> int:
    """Exit 0 when the server answers: the recorded one, else the one the defaults and env describe."""
    info = runtime.recorded(runtime.runtime_file(env))
    if info is None:
        try:
            defaults = check_defaults(json.loads(defaults_path.read_text()), defaults_path)
            serve = effective_settings(defaults, env)
        except (OSError, ValueError, EntrypointError):
            return 1
        info = {"port": serve["port"], "model": serve.get("served_model_name") or serve["model"],
                "api_key": env.get("VLLM_API_KEY")}
    return 0 if runtime.probe(info, ready) else 1


MODES = ("--print-command", "--preflight-only")
PROBES = ("--healthcheck", "--ready")
MODULE_SET_FILE = Path("/usr/share/dsv4-flash/flashinfer-module-set")


def version_line(defaults: dict, module_set_file: Path = MODULE_SET_FILE) -> str:
    """What --version prints: the target, its build id and, for a cuda image, which FlashInfer modules are
    prebuilt; an image built with a smaller set (CI's) says it is not a release image."""
    line = f"dsv4-flash {defaults.get('target', '?')} (build {defaults.get('build_id', '?')})"
    modules = defaults.get("flashinfer_modules")
    if defaults.get("kind") != "cuda" or not isinstance(modules, dict):
        return line
    try:
        chosen = module_set_file.read_text().strip()
    except OSError:
        chosen = "unknown"
    members = modules.get(chosen) if chosen in modules else None
    line += f", FlashInfer AOT module set {chosen}"
    if chosen == "full" and members:
        return line + f" ({', '.join(members)})"
    if members:
        left = [m for m in modules.get("full", []) if m not in members]
        return line + f" ({', '.join(members)}): NOT a release image; compiled on first use: {', '.join(left)}"
    return line + ": NOT a release image (the set is not one this image's matrix names)"


def check_model_path(serve: dict, env: dict) -> None:
    """A MODEL given as a path must be there (vLLM would read a missing one as a Hugging Face id), and a
    directory must be a Hugging Face checkpoint (config.json); a file may be a GGUF checkpoint."""
    model = env.get("MODEL")
    if not model or not model.startswith(("/", "./", "../")):
        return
    if not os.path.exists(model):
        raise EntrypointError(f"MODEL={_shown(model)}: no such file or directory (mount the checkpoint there, "
                              "or give a Hugging Face model id)", EXIT_BAD_OVERRIDE)
    if os.path.isdir(model) and not os.path.isfile(os.path.join(model, "config.json")):
        raise EntrypointError(f"MODEL={_shown(model)} is a directory without config.json: not a Hugging Face "
                              "checkpoint", EXIT_BAD_OVERRIDE)


def _print(line: str) -> None:
    """stdout for --print-command; a reader that went away is not an error."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass


def main(argv: list[str] | None = None, env: dict | None = None, defaults_path: Path | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dsv4-serve"]:  # `docker run IMAGE dsv4-serve --print-command`: the entrypoint named again
        argv = argv[1:]
    env = dict(os.environ if env is None else env)
    defaults_path = defaults_path or (Path(env["DSV4_DEFAULTS"]) if env.get("DSV4_DEFAULTS") else DEFAULTS_PATH)
    if argv[:1] and argv[0] in PROBES:
        if len(argv) > 1:
            print(f"[dsv4-flash] error: {argv[0]} takes no arguments, got {_shown(' '.join(argv[1:]))}",
                  file=sys.stderr, flush=True)
            return EXIT_BAD_OVERRIDE
        return probe(argv[0] == "--ready", env, defaults_path)
    if argv == ["--version"]:
        try:
            defaults = json.loads(defaults_path.read_text())
            if not isinstance(defaults, dict):
                raise ValueError("not a JSON object")
            _print(version_line(defaults))
        except (OSError, ValueError) as exc:
            print(f"[dsv4-flash] error: cannot read the image's serve defaults {defaults_path}: {exc}", file=sys.stderr)
            return EXIT_BAD_OVERRIDE
        return 0
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
        check_defaults(defaults, defaults_path)
        if argv and not argv[0].startswith("-"):
            raise EntrypointError(f"{_shown(argv[0])} is not a `vllm serve` option: arguments after the image are "
                                  "extra vLLM flags (--flag value); to run another program use docker run --entrypoint",
                                  EXIT_BAD_OVERRIDE)
        check_environment(env, serving=mode not in MODES)
        serve = effective_settings(defaults, env)
        command = build_command(serve, argv)
        secrets = runtime.secret_values(env, command)
        shown = runtime.redact(shlex.join(runtime.redact_command(command)), secrets)
        if "MODEL_REVISION" in env and is_path(serve["model"]):
            say(f"warning: MODEL_REVISION={_shown(env['MODEL_REVISION'])} is not passed to vLLM: MODEL "
                f"{serve['model']} is a path, and a revision names a Hugging Face commit")
        say(shown)
        if mode == "--print-command":
            _print(shown)
            return 0
        check_model_path(serve, env)
        if not runtime.flag(env, "DSV4_SKIP_PREFLIGHT"):
            preflight(defaults, serve, env, say, command)
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
    try:
        os.execvpe(command[0], command, {**env, **cache_env})
    except OSError as exc:  # not this image (no vllm on PATH), or a broken one
        say(f"error: cannot start {command[0]}: {exc.strerror or exc}")
    return 127


if __name__ == "__main__":
    sys.exit(main())
