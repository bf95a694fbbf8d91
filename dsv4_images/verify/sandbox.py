"""Run model-written Python against given asserts, in a subprocess that is as contained as this
machine allows.

What holds, always: a fresh interpreter in isolated mode (`python -I`: no PYTHON* variables, no
user site-packages, neither the script's directory nor the cwd on sys.path) with an empty
environment apart from PATH and LANG, in a new temporary directory that is deleted afterwards, in
its own session (its process group is killed at the wall-clock timeout), with stdin closed and
resource limits: CPU time (RLIMIT_CPU), address space (RLIMIT_AS), size of any file written
(RLIMIT_FSIZE), open files (RLIMIT_NOFILE), processes (RLIMIT_NPROC, against fork bombs), no core
files. The solution is loaded with `runpy` under the name "solution", so its `if __name__ ==
"__main__":` block does not run; the asserts then run in its namespace, and the check passes only
if a random end marker printed after the last assert is seen and the exit status is 0.

What holds where the machine allows it (recorded in `Outcome.isolation`):
- started as root: the child drops to the unprivileged uid/gid 65534 (nobody) before exec, so it
  cannot write what root owns and RLIMIT_NPROC applies (it does not bind root);
- `unshare --user --net --map-root-user` works: the child runs in new user and network
  namespaces, with no network interface but a loopback that is down, and its process count
  limited within that namespace. Where unshare is missing or refused, there is NO network
  isolation: the code could open sockets. The files it can read are whatever uid 65534 (or the
  calling user) may read.
This is containment for checking answers of a model under test, not a security boundary against
a hostile author: run verify on a machine you would let the model's code run on.
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NOBODY = 65534
CPU_S = 5
WALL_S = 15
MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20
NOFILE = 64
NPROC = 32


@dataclass(frozen=True)
class Outcome:
    passed: bool
    detail: str          # "" when passed; else the last line of the error, or "timeout"
    isolation: str       # which of the optional protections applied


def _limits(drop_to_nobody: bool, cpu_s: int = CPU_S):
    def apply() -> None:
        if drop_to_nobody:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
        resource.setrlimit(resource.RLIMIT_NPROC, (NPROC, NPROC))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _runs(command: list[str], drop: bool) -> bool:
    try:
        return subprocess.run(command, preexec_fn=_limits(drop), capture_output=True, timeout=20,
                              cwd="/", env={"PATH": "/usr/bin:/bin"}).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@lru_cache(maxsize=1)
def _setup() -> tuple[list[str], bool, str]:
    """(command up to the script, drop to nobody, description), probed once per process. The
    interpreter: this one, else the system's python3, whichever the sandboxed uid can execute."""
    root = os.geteuid() == 0
    unshare = shutil.which("unshare")
    prefix = [unshare, "--user", "--net", "--map-root-user"] if unshare else []
    if prefix and not _runs([*prefix, "true"], root):
        prefix = []
    candidates = (os.path.realpath(sys.executable), shutil.which("python3", path="/usr/bin:/bin"))
    pythons = list(dict.fromkeys(p for p in candidates if p))
    for drop in ((True, False) if root else (False,)):
        for python in pythons:
            if _runs([*prefix, python, "-I", "-c", "pass"], drop):
                parts = [python, f"uid {NOBODY}" if drop else f"uid {os.geteuid()}",
                         "no network (user+net namespaces)" if prefix else "NO network isolation (unshare unavailable)"]
                return [*prefix, python, "-I"], drop, ", ".join(parts)
    return [sys.executable, "-I"], False, f"{sys.executable}, uid {os.geteuid()}, NO network isolation (probe failed)"


def run_python(solution: str, asserts: list[str], wall_s: float = WALL_S, cpu_s: int = CPU_S) -> Outcome:
    command, drop, isolation = _setup()
    marker = f"ALL-ASSERTS-PASSED-{secrets.token_hex(8)}"
    driver = ("import runpy\n"
              "_ns = runpy.run_path('solution.py', run_name='solution')\n"
              "globals().update({k: v for k, v in _ns.items() if not k.startswith('__')})\n"
              + "".join(f"assert {a}, {a!r}\n" for a in asserts)
              + f"print({marker!r})\n")
    with tempfile.TemporaryDirectory(prefix="dsv4-sandbox-") as tmp:
        work = Path(tmp)
        (work / "solution.py").write_text(solution)
        (work / "check.py").write_text(driver)
        if drop:
            for p in (work, work / "solution.py", work / "check.py"):
                os.chown(p, NOBODY, NOBODY)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        try:
            proc = subprocess.Popen([*command, "check.py"], cwd=work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    preexec_fn=_limits(drop, cpu_s), start_new_session=True)
        except OSError as exc:
            return Outcome(False, f"could not start python: {exc}", isolation)
        try:
            out, err = proc.communicate(timeout=wall_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return Outcome(False, f"timeout after {wall_s:g} s", isolation)
        finally:
            _kill(proc)
    if proc.returncode == 0 and marker.encode() in out:
        return Outcome(True, "", isolation)
    lines = err.decode(errors="replace").strip().splitlines()
    if proc.returncode == -signal.SIGXCPU or proc.returncode == -signal.SIGKILL:
        return Outcome(False, f"CPU limit ({cpu_s} s) or killed", isolation)
    return Outcome(False, (lines[-1] if lines else f"exit status {proc.returncode}")[:200], isolation)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
