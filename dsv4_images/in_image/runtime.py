"""What the serving container needs from its surroundings, checked before vLLM starts (stdlib only;
copied into every image next to entrypoint.py).

- Secrets are never printed: `redact` hides the values of secret flags (--api-key, --hf-token, any
  --*-key/--*-token/--*-secret/--*-password) and of secret variables (*_TOKEN, *_KEY, *_SECRET,
  *_PASSWORD) in every line the entrypoint writes.
- Shared memory: vLLM's engine passes tensors through /dev/shm (the cpu target needs 160 MiB, Docker
  gives 64 MiB by default); a /dev/shm smaller than the target's `min_shm_mb` is refused in one line
  that says what to pass, instead of a server that dies after a minute of loading.
- Caches: one volume at $HOME/.cache holds everything. The Hugging Face cache ($HOME/.cache/huggingface)
  is shared by every image; compile caches (FlashInfer JIT, Triton, TorchInductor, vLLM's own) live in
  $HOME/.cache/dsv4-flash/<build id>/, keyed to the image's build inputs, so a new image never reads
  another's compiled kernels and replicas of one image share theirs (each library writes its cache
  entries atomically or under its own file locks). Start-up says whether the caches are cold.
- The serving process records its effective port, host, model name and API key in a runtime file
  (mode 0600), so probes (`--healthcheck`, `--ready`) talk to the port the server really uses, even
  when `--port` came as an extra argument.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

SECRET_FLAG = re.compile(r"^--(?:api-key|hf-token|[\w-]*-(?:key|token|secret|password))$")
SECRET_VAR = re.compile(r"(?:^|_)(?:TOKEN|KEY|SECRET|PASSWORD)$")
RUNTIME_FILE = Path(os.environ.get("DSV4_RUNTIME_FILE") or "/tmp/dsv4-flash/serving.json")
MASK = "***"


class EnvironmentProblem(Exception):
    """The container's surroundings cannot serve: one line, and the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# ---- switches -----------------------------------------------------------------------------------

ON, OFF = ("1", "true", "yes"), ("0", "false", "no")


def flag(env: dict, name: str) -> bool:
    """A 0/1 switch (also true/false, yes/no, any case); unset is off; anything else is refused."""
    value = env.get(name)
    if value is None:
        return False
    if value.lower() in ON or value.lower() in OFF:
        return value.lower() in ON
    raise EnvironmentProblem(f"{name}={value[:40]!r} is not 0 or 1 (also false/true, no/yes)")


# ---- secrets ------------------------------------------------------------------------------------

def secret_values(env: dict, command: list[str]) -> list[str]:
    values = [v for k, v in env.items() if SECRET_VAR.search(k.upper()) and len(v) >= 4]
    for i, arg in enumerate(command):
        flag, eq, value = arg.partition("=")
        if SECRET_FLAG.match(flag):
            if eq:
                values.append(value)
            elif i + 1 < len(command):
                values.append(command[i + 1])
    return sorted({v for v in values if v}, key=len, reverse=True)


def redact_command(command: list[str]) -> list[str]:
    out, hide_next = [], False
    for arg in command:
        flag, eq, _ = arg.partition("=")
        if hide_next:
            out.append(MASK)
            hide_next = False
        elif SECRET_FLAG.match(flag):
            out.append(f"{flag}={MASK}" if eq else arg)
            hide_next = not eq
        else:
            out.append(arg)
    return out


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, MASK)
    return text


def api_key(env: dict, command: list[str]) -> str | None:
    """The key vLLM will require: the last --api-key, else VLLM_API_KEY."""
    return last_value(command, "--api-key") or env.get("VLLM_API_KEY") or None


# ---- shared memory ------------------------------------------------------------------------------

def shm_mib(path: str = "/dev/shm") -> int | None:
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    return fs.f_blocks * fs.f_frsize // (1 << 20)


def check_shm(minimum_mib: int | None, env: dict, measured: int | None = None) -> str | None:
    """None when /dev/shm is large enough (or the check is off); raises when it is too small."""
    if not minimum_mib or flag(env, "DSV4_SKIP_SHM_CHECK"):
        return None
    size = shm_mib() if measured is None else measured
    if size is None or size >= minimum_mib:
        return None
    gib = max(1, -(-minimum_mib // 1024))
    raise EnvironmentProblem(f"/dev/shm is {size} MiB but this image needs at least {minimum_mib} MiB for vLLM's "
                             f"shared-memory queues: run the container with --shm-size={gib}g (or --ipc=host); "
                             "DSV4_SKIP_SHM_CHECK=1 skips this check")


# ---- caches -------------------------------------------------------------------------------------

def _writable(path: Path) -> bool:
    """Create and remove a file of a name no one else uses. Replicas share the cache volume and their
    entrypoints can have one PID (each in its own PID namespace), so a name made from the PID let one
    replica remove the other's probe and call a writable volume not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dsv4-write-test-", dir=path)
    except OSError:
        return False
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return True


def _size(path: Path) -> int:
    """Bytes under `path`, while a sibling replica's compilers may be writing and renaming files in it."""
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:  # renamed or removed since the listing
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def cache_root(env: dict) -> Path:
    """$HOME/.cache, checked writable (the entrypoint checks it right after HOME, before HF_HOME)."""
    root = Path(env.get("HOME") or "/home/dsv4") / ".cache"
    if not _writable(root):
        try:
            st = root.stat()
            owner = f"owned by uid {st.st_uid} gid {st.st_gid}, mode {oct(st.st_mode & 0o777)}"
        except OSError:
            owner = "not creatable"
        raise EnvironmentProblem(
            f"the cache directory {root} is not writable ({owner}; this container runs as uid {os.getuid()} gid "
            f"{os.getgid()}): mount it writable for group 0 (chmod g+rwX) or run with --user <owner uid>:0")
    return root


def prepare_caches(env: dict, build_id: str) -> tuple[dict[str, str], list[str]]:
    """The cache variables to set for vLLM, and what to log about the caches."""
    root = cache_root(env)
    keyed = root / "dsv4-flash" / build_id
    variables = {
        "HF_HOME": env.get("HF_HOME") or str(root / "huggingface"),
        "VLLM_CACHE_ROOT": str(keyed / "vllm"),
        "FLASHINFER_WORKSPACE_BASE": str(keyed),  # FlashInfer's JIT cache: <base>/.cache/flashinfer
        "TRITON_CACHE_DIR": str(keyed / "triton"),
        "TORCHINDUCTOR_CACHE_DIR": str(keyed / "torchinductor"),
    }
    marker = keyed / "first-start"
    if marker.is_file():
        notes = [f"caches: warm for build {build_id} (first start {marker.read_text().strip()}); "
                 f"{_size(keyed) / 1e6:.0f} MB of compiled kernels under {keyed}"]
    else:
        keyed.mkdir(parents=True, exist_ok=True)
        marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
        notes = [f"caches: cold for build {build_id}: kernels are compiled on first use (FlashInfer JIT, Triton, "
                 f"torch.compile) and this start takes longer; mount a volume at {root} to keep them"]
    others = [p for p in (root / "dsv4-flash").iterdir() if p.is_dir() and p.name != build_id]
    if others:
        notes.append(f"caches: {len(others)} other build(s) under {root / 'dsv4-flash'} "
                     f"({', '.join(p.name for p in others[:4])}); delete them once no replica of those images runs")
    return variables, notes


# ---- the running server, for probes --------------------------------------------------------------

def last_value(command: list[str], flag: str) -> str | None:
    """The value vLLM takes for `flag` (its last occurrence, as `--flag V` or `--flag=V`)."""
    value = None
    for i, arg in enumerate(command):
        name, eq, inline = arg.partition("=")
        if name == flag:
            value = inline if eq else (command[i + 1] if i + 1 < len(command) else value)
    return value


def record(serve: dict, command: list[str], env: dict, path: Path | None = None) -> None:
    """What probes need to know about the server this container runs (mode 0600: it may hold the key)."""
    port = last_value(command, "--port") or serve["port"]
    info = {"port": int(port), "host": last_value(command, "--host") or serve["host"],
            "model": last_value(command, "--served-model-name") or serve["model"], "api_key": api_key(env, command)}
    path = path or runtime_file(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)


def runtime_file(env: dict) -> Path:
    """Where `record` writes: $DSV4_RUNTIME_FILE of the environment given, else RUNTIME_FILE."""
    return Path(env["DSV4_RUNTIME_FILE"]) if env.get("DSV4_RUNTIME_FILE") else RUNTIME_FILE


def recorded(path: Path | None = None) -> dict | None:
    """What `record` wrote; None when it is missing or not what record writes (probes then ask the defaults)."""
    try:
        info = json.loads((path or RUNTIME_FILE).read_text())
    except (OSError, ValueError):
        return None
    port, model = info.get("port") if isinstance(info, dict) else None, info.get("model") if isinstance(info, dict) else None
    if not (isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535 and isinstance(model, str)):
        return None
    key = info.get("api_key")
    return info if key is None or isinstance(key, str) else None


def _get(url: str, key: str | None, body: dict | None = None, timeout: float = 5) -> dict | None:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return json.loads(raw) if raw.strip().startswith((b"{", b"[")) else {}
    except (OSError, ValueError, urllib.error.HTTPError):
        return None


def probe(info: dict, ready: bool) -> bool:
    """--healthcheck: GET /health answers; --ready: the model is listed and answers a 1-token completion."""
    base = f"http://127.0.0.1:{info['port']}"
    if not ready:
        return _get(f"{base}/health", None) is not None
    # --ready runs under a 60 s probe timeout (Compose, Kubernetes): a server slowed by a loaded host
    # (a 2-core CI machine compiling beside it) is given time to answer rather than called not ready.
    models = _get(f"{base}/v1/models", info.get("api_key"), timeout=15)
    ids = [m.get("id") for m in (models or {}).get("data", []) if isinstance(m, dict)]
    if info["model"] not in ids:
        return False
    answer = _get(f"{base}/v1/completions", info.get("api_key"),
                  {"model": info["model"], "prompt": "ping", "max_tokens": 1, "temperature": 0}, timeout=30)
    return bool(answer and answer.get("choices"))
