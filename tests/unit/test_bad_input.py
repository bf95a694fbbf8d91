"""Hostile input everywhere (issue 11 part 4).

Every flag of every subcommand (found by walking the argparse parser, so a new flag is covered
without editing this file) and every environment variable the CLI and the image's entrypoint read
(found in their source, so a new one is covered too) gets each hostile value below. Each input must
end in one of two ways:
- refused: a non-zero exit, exactly one `error:` line on stderr, no traceback, and nothing sent to
  the Docker daemon, the network or a writer (those are replaced by a tripwire here);
- accepted, because ACCEPTED (or ENTRYPOINT_ACCEPTED) says so and why: the value is valid.
Anything else (a traceback, a silent acceptance, two lines, exit 0 on a refusal) is listed as a
failure. The bulk runs in-process (cli.main, entrypoint.main); a representative subset runs the
real programs in subprocesses. The counts and the time taken go to reports/test-figures.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsv4_images import REPO_ROOT, cli, docker_client, matrix
from dsv4_images.in_image import entrypoint as ep
from dsv4_images.in_image import runtime, tinymodel

JUNK = os.fsdecode(bytes(range(1, 256))[::9])          # NUL-free binary junk, undecodable bytes included
HOSTILE = {
    "empty": "", "space": " ", "tab-newline": "\t\n", "minus-one": "-1", "minus-zero": "-0", "zero": "0",
    "1e309": "1e309", "-1e309": "-1e309", "nan": "nan", "inf": "inf", "-inf": "-inf", "huge": "9" * 30,
    "giant": "9" * 5000, "arabic-digits": "١٢", "fullwidth-digit": "８", "superscript": "²", "underscored": "1_0",
    "hex": "0x10", "padded": " 8 ", "fraction": "2.5", "shell": "; rm -rf / #", "substitution": "$(id)`id`",
    "redirect": "a|b&c>d<e", "quotes": "'\"", "unclosed": "--x 'a", "long": "x" * 5000, "junk": JUNK,
    "non-ascii": "héllo", "emoji": "🙂", "traversal": "../up/../x", "root": "/",
    "read-only-fs": "/sys/dsv4-bad-input/x.json", "proc": "/proc/dsv4-bad-input/x",
}
PATH_VALUES = ("directory", "under-a-file")            # made per test run in tmp_path


def hostile(tmp: Path) -> dict[str, str]:
    """HOSTILE, and paths made in `tmp` (the working directory is tmp/cwd, so relative ones stay in tmp)."""
    blocker = tmp / "a-file"
    blocker.write_text("")
    (tmp / "a-dir").mkdir(exist_ok=True)
    return {**HOSTILE, "directory": str(tmp / "a-dir"), "under-a-file": str(blocker / "x.json")}


# What a value may be accepted as, and why: a name, tag or path that is valid. Every other hostile
# value of every flag must be refused.
VALID_NAME = {"zero", "1e309", "nan", "inf", "huge", "underscored", "hex", "fraction"}  # [a-z0-9] joined by [._-]
VALID_TAG = VALID_NAME                                        # [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
WRITABLE_PATH = {"minus-one", "-inf", "minus-zero", "zero", "1e309", "-1e309", "nan", "inf", "huge", "arabic-digits",
                 "fullwidth-digit", "superscript", "underscored", "hex", "fraction", "shell", "substitution",
                 "redirect", "quotes", "unclosed", "junk", "non-ascii", "emoji", "traversal"}
ACCEPTED = {  # (subcommand, flag) -> (hostile keys accepted, why)
    ("build", "--owner"): (VALID_NAME, "an owner of lowercase letters and digits is valid"),
    ("build", "--image"): (VALID_NAME, "a repository of lowercase letters and digits is valid"),
    ("build", "--tag"): (VALID_TAG, "a valid Docker tag"),
    ("prove", "--image"): (VALID_NAME, "a local image named with lowercase letters and digits is valid (prove then "
                                       "asks the daemon, after the venv steps)"),
    ("verify", "--json"): (WRITABLE_PATH, "any file path that can be written (relative ones under the working "
                                          "directory; Linux takes any byte but NUL and '/' in a name)"),
    ("verify", "--temperature"): ({"zero", "minus-zero"}, "0 is greedy sampling"),
    ("verify", "--image"): (VALID_NAME, "an image named with lowercase letters and digits is valid (docker.io/library/"
                                        "NAME; verify then resolves its digest in the registry)"),
    ("sbom", "--image"): (VALID_NAME, "a local image named with lowercase letters and digits is valid"),
    ("sbom", "--output"): (WRITABLE_PATH | {"root", "directory"}, "any directory that exists or can be made, and is written"),
    ("prove", "--report"): (WRITABLE_PATH, "any file path that can be written"),
    ("verify", "--concurrency"): ({"padded"}, "spaces around a level are allowed (' 8 ' is 8)"),
    **{("verify", f"--{t}-timeout"): ({"fraction"}, "2.5 seconds") for t in ("connect", "first-byte", "request", "run")},
}
BASES = {  # valid invocations per subcommand, to each of which one hostile flag is added (default: [name])
    "build": [["build", "--arch", "cpu", "--dry-run"], ["build", "--arch", "cpu"]],   # plan only; then the daemon
    "lock": [["lock"]], "verify": [["verify", "--url", "http://127.0.0.1:9"]],
    "prove": [["prove", "--arch", "sm120"]],   # prove's run is a tripwire: its arguments are checked before it
    "sbom": [["sbom", "--arch", "cpu", "--image", "dsv4-flash:cpu"]],   # then the daemon (a tripwire)
    "check": [["check", "127.0.0.1:5000/dsv4-flash:cpu"]],               # then the registry (a tripwire)
}


class Tripwire(Exception):
    """Validation let the input through to the daemon, the network or a writer."""


@pytest.fixture
def tripwires(monkeypatch, tmp_path):
    from dsv4_images import digests, locks, patches, render, repro
    from dsv4_images.attest import check, receipts
    from dsv4_images.verify import server

    def trip(what):
        def raise_(*_a, **_k):
            raise Tripwire(what)
        return raise_
    monkeypatch.setattr(docker_client, "connect", trip("the Docker daemon"))
    monkeypatch.setattr(server, "describe", trip("the network (verify)"))
    monkeypatch.setattr(socket, "create_connection", trip("the network"))
    monkeypatch.setattr(digests, "main", trip("the network (registry)"))
    monkeypatch.setattr(receipts, "resolve", trip("the registry (verify --image)"))
    monkeypatch.setattr(check, "main", trip("the registry (check)"))
    from dsv4_images.prove import command as prove_command
    for module, name in ((locks, "write_locks"), (locks, "write_dev_lock"), (render, "write"),
                         (patches, "check_targets"), (repro, "main"), (prove_command, "run")):
        monkeypatch.setattr(module, name, trip(f"{module.__name__}.{name}"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def run_cli(argv: list[str], env: dict | None = None) -> tuple[object, str, str]:
    """cli.main in-process: (exit code or what stopped it, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code
            except Tripwire as exc:
                code = f"reached {exc}"
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                code = f"traceback {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def judge(code, out: str, err: str, accepted: bool, error_prefix: str = "error: ") -> str | None:
    """None when the outcome is right; else what was wrong."""
    if isinstance(code, str) and code.startswith("traceback"):
        return code
    if "Traceback" in out + err:
        return "traceback on stderr"
    went_on = code == 0 or (isinstance(code, str) and code.startswith("reached"))
    if accepted:
        return None if went_on else f"refused a valid value: {err.strip()[-160:]!r}"
    if went_on:
        return f"silently accepted ({code if code else 'exit 0'})"
    errors = [line for line in err.strip().splitlines() if "error:" in line]
    if len(errors) != 1 or not errors[0].startswith(error_prefix):
        return f"not exactly one error line: exit {code}, stderr {err.strip()[-200:]!r}"
    return None


def subcommand_options() -> list[tuple[str, argparse.Action]]:
    top = cli.parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, p in sub.choices.items() for action in p._actions
            if action.option_strings and not isinstance(action, argparse._HelpAction)]


def argv_with(base: list[str], action: argparse.Action, value: str) -> list[str]:
    flag = action.option_strings[-1]
    base = list(base)
    if flag in base:                       # the flag under test replaces the base's own value
        i = base.index(flag)
        del base[i:i + 2]
    return base + [f"{flag}={value}"]


def test_every_flag_of_every_subcommand_with_hostile_values(tripwires, report):
    values = hostile(tripwires)
    started, tried, failures = time.monotonic(), 0, []
    for name, action in subcommand_options():
        flag = action.option_strings[-1]
        accepted_keys, _why = ACCEPTED.get((name, flag), (set(), ""))
        cases = values.items() if action.nargs != 0 else [("explicit-value", "yes")]  # --push=yes
        for base in BASES.get(name, [[name]]):
            for key, value in cases:
                code, out, err = run_cli(argv_with(base, action, value))
                tried += 1
                wrong = judge(code, out, err, key in accepted_keys)
                if wrong:
                    failures.append(f"{' '.join(base)} {flag}={key}: {wrong}")
    report["bad_input_cli_flags"] = {"inputs": tried, "seconds": round(time.monotonic() - started, 1),
                                     "flags": len(subcommand_options())}
    assert not failures, f"{len(failures)} of {tried}:\n" + "\n".join(failures)


def test_check_s_image_reference_with_hostile_values(tripwires):
    """check's one positional argument: a reference Docker would accept reaches the registry, the rest is refused."""
    failures = []
    for key, value in hostile(tripwires).items():
        code, out, err = run_cli(["check", value])
        wrong = judge(code, out, err, key in VALID_NAME)
        if wrong:
            failures.append(f"check {key}: {wrong}")
    assert not failures, "\n".join(failures)


# ---- environment variables the command line reads -----------------------------------------------

ENV_READ = re.compile(r"""(?:environ\.get|env\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']|env\[["']([A-Z][A-Z0-9_]+)["']\]""")
NOT_OURS = {"DOCKER_HOST": "read by the Docker SDK when connecting: a bad one is one line (test_cli.py)",
            "DOCKER_CONFIG": "where attest/registry.py finds registry logins, as Docker does: a bad config.json or "
                             "a path that is no directory is one line (test_registry.py)",
            **{name: "set by GitHub Actions on its runners; copied into the provenance's builder and invocation ids "
                     "(attest/documents.py), never parsed" for name in ("GITHUB_ACTIONS", "GITHUB_WORKFLOW_REF",
                     "GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT")},
            "TESTCONTAINERS_RYUK_DISABLED": "set by us for testcontainers, not read",
            "HF_TOKEN": "passed through (compose); not read by the command line",
            "PATH": "prove prepends its toolchain to it; never parsed",
            "CMAKE_ARGS": "written into the compile stage's environment by matrix.py, not read",
            "FLASHINFER_CUBIN_DIR": "read by flashinfer_aot.py inside the image build, not by the command line",
            "MAX_JOBS": "read by flashinfer_aot.py inside the image build (a build argument), not by the command line"}


def variables_read(paths) -> set[str]:
    found = set()
    for path in paths:
        for match in ENV_READ.finditer(path.read_text()):
            found.add(match.group(1) or match.group(2))
    return found


def test_the_cli_checks_every_variable_it_reads():
    host_side = [p for p in (REPO_ROOT / "dsv4_images").rglob("*.py") if "in_image" not in p.parts
                 and "deploy" not in p.parts and "worker" not in p.parts]  # prove's worker runs in its own venv
    read = variables_read(host_side) - set(NOT_OURS)
    assert read <= set(cli.ENVIRONMENT), f"read but not checked: {sorted(read - set(cli.ENVIRONMENT))}"


ENV_ACCEPTED = {
    "DSV4_OWNER": (VALID_NAME, "an owner of lowercase letters and digits is valid"),
    "SOURCE_DATE_EPOCH": ({"zero"}, "0 is 1970-01-01, a valid epoch"),
    "DSV4_CACHE": (WRITABLE_PATH | {"root", "directory"}, "any directory that exists or can be made, and is written"),
}


def test_every_cli_variable_with_hostile_values(tripwires, report):
    values = hostile(tripwires)
    started, tried, failures = time.monotonic(), 0, []
    for name, (commands, _check) in cli.ENVIRONMENT.items():
        command = ["build", "--arch", "cpu", "--dry-run"] if commands is None or "build" in commands else [commands[0]]
        accepted_keys, _why = ENV_ACCEPTED.get(name, (set(), ""))
        for key, value in values.items():
            code, out, err = run_cli(command, {name: value})
            tried += 1
            wrong = judge(code, out, err, key in accepted_keys)
            if wrong:
                failures.append(f"{name}={key}: {wrong}")
    report["bad_input_cli_environment"] = {"inputs": tried, "seconds": round(time.monotonic() - started, 1)}
    assert not failures, f"{len(failures)} of {tried}:\n" + "\n".join(failures)


# ---- the image's entrypoint ----------------------------------------------------------------------

IN_IMAGE = [REPO_ROOT / "dsv4_images" / "in_image" / n for n in ("entrypoint.py", "runtime.py", "checkpoint.py")]


def entrypoint_variables() -> set[str]:
    """What the entrypoint (and the runtime and checkpoint modules it runs) read from the environment."""
    return variables_read(IN_IMAGE) | set(ep.INT_OVERRIDES) | set(ep.STR_OVERRIDES) | set(ep.FLAGS) | set(ep.PATHS)


PRINTABLE_WORDS = VALID_NAME | {"arabic-digits", "fullwidth-digit", "superscript", "substitution", "redirect",
                                "quotes", "non-ascii", "emoji", "traversal", "root", "read-only-fs", "proc",
                                "directory", "under-a-file"}   # printable, no spaces, not starting with -
OFF = {"zero"}
ENTRYPOINT_ACCEPTED = {  # variable -> (hostile keys accepted, why)
    "MODEL": (VALID_NAME, "shaped like a Hugging Face id: whether the Hub has it is the Hub's to say (the preflight "
                          "asks it where it is reachable; here it is not)"),
    "MODEL_REVISION": (VALID_NAME, "a branch, tag or commit name"),
    "SERVED_MODEL_NAME": (PRINTABLE_WORDS, "any name without spaces: it is only the API's model id"),
    "VLLM_API_KEY": (PRINTABLE_WORDS | {"minus-one", "minus-zero", "-1e309", "-inf", "giant", "long", "shell",
                                        "unclosed"}, "any secret without surrounding spaces or control characters"),
    "KV_CACHE_DTYPE": ({"nan", "inf"}, "shaped like a dtype name: vLLM checks the name (platform plugins add their "
                                       "own) when it parses its arguments, before loading anything"),
    "VLLM_EXTRA_ARGS": ({"empty", "space", "tab-newline", "-inf"}, "no extra arguments, or shaped like an option: "
                        "vLLM judges its own flags when it parses them"),
    "HOST": ({"zero"}, "0 is 0.0.0.0"),
    "HOME": ({"directory"}, "an existing, writable directory"),
    **{name: ({"root", "directory"}, "an existing directory (a cache may be read-only: HF_HUB_OFFLINE=1)")
       for name in ("HF_HOME", "HF_HUB_CACHE", "XDG_CACHE_HOME")},
    **{name: (OFF, "0 is off") for name in ("NUM_SPECULATIVE_TOKENS", "DSV4_SKIP_PREFLIGHT", "DSV4_SKIP_SHM_CHECK",
                                            "HF_HUB_OFFLINE")},
}


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """What the image holds, laid out on the host: a checkpoint with MTP and the cpu target's serve.json."""
    root = tmp_path_factory.mktemp("image")
    tinymodel.write_model(root / "model", seed=1)
    (root / "serve.json").write_text(json.dumps(matrix.load().resolve("cpu").serve_defaults()))
    return root


def image_env(root: Path) -> dict[str, str]:
    return {"HOME": str(root / "home"), "MODEL": str(root / "model"), "DSV4_DEFAULTS": str(root / "serve.json"),
            "DSV4_RUNTIME_FILE": str(root / "run" / "serving.json"), "PATH": os.environ["PATH"]}


def run_entrypoint(argv: list[str], env: dict) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = ep.main(argv, env)
        except Tripwire as exc:
            code = f"reached {exc}"
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            code = f"traceback {type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def no_exec(monkeypatch, tmp_path_factory):
    """vLLM is not started (exec is the tripwire) and the Hub is not asked (the preflight then says
    "not checked", as it does wherever the Hub is out of reach)."""
    def trip(what):
        def raise_(*_a, **_k):
            raise Tripwire(what)
        return raise_
    monkeypatch.setattr(os, "execvpe", trip("exec vllm"))
    monkeypatch.setattr(socket, "create_connection", trip("the network"))
    monkeypatch.setattr(ep, "gpu_compute_capabilities", lambda: None)
    prepare, record = runtime.prepare_caches, runtime.record

    def inside_tmp(path: Path, what: str) -> None:
        if not path.resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve()):
            raise Tripwire(f"{what} outside the test's directories: {path}")

    def guarded_prepare(env, build_id):
        inside_tmp(Path(env.get("HOME") or "/home/dsv4"), "caches")
        return prepare(env, build_id)

    def guarded_record(serve, command, env, path=None):
        inside_tmp(path or runtime.runtime_file(env), "the runtime file")
        return record(serve, command, env, path)
    monkeypatch.setattr(runtime, "prepare_caches", guarded_prepare)
    monkeypatch.setattr(runtime, "record", guarded_record)


def test_the_healthy_image_environment_reaches_vllm(image_files, no_exec):
    code, _, err = run_entrypoint([], image_env(image_files))
    assert code == "reached exec vllm", err
    assert "preflight: MTP k=2: 44 MTP tensors found" in err


def test_every_entrypoint_variable_with_hostile_values(image_files, no_exec, tmp_path, monkeypatch, report):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative values land in tmp_path
    values = hostile(tmp_path)
    variables = sorted(entrypoint_variables())
    started, tried, failures = time.monotonic(), 0, []
    for name in variables:
        accepted_keys, _why = ENTRYPOINT_ACCEPTED.get(name, (set(), ""))
        for key, value in values.items():
            if name == "HOME" and key == "root":
                continue  # valid where / is writable (as root here), and it would put caches in /.cache
            code, out, err = run_entrypoint([], {**image_env(image_files), name: value})
            tried += 1
            wrong = judge(code, out, err, key in accepted_keys, error_prefix="[dsv4-flash] error: ")
            if wrong:
                failures.append(f"{name}={key}: {wrong}")
    report["bad_input_entrypoint_environment"] = {"inputs": tried, "variables": len(variables),
                                                  "seconds": round(time.monotonic() - started, 1)}
    assert not failures, f"{len(failures)} of {tried}:\n" + "\n".join(failures)


# ---- the same through real processes (a representative subset) ----------------------------------

NOWHERE = {"DOCKER_HOST": "unix:///nonexistent/dsv4-bad-input.sock", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}  # had a bad input gone through, its error would name these instead
CLI_SUBSET = [  # (argv, environment, what the one error line must name)
    (["--arch", "cpu"], {"SOURCE_DATE_EPOCH": " 1700000000"}, "SOURCE_DATE_EPOCH=' 1700000000'"),
    (["--arch", "cpu"], {"SOURCE_DATE_EPOCH": "١٧٠٠٠٠٠٠٠٠"}, "SOURCE_DATE_EPOCH="),
    (["--arch", "cpu"], {"SOURCE_DATE_EPOCH": "253402300800"}, "beyond what an OCI timestamp holds"),
    (["--arch", "cpu"], {"SOURCE_DATE_EPOCH": "9" * 5000}, "beyond what an OCI timestamp holds"),
    (["--arch", "cpu"], {"SOURCE_DATE_EPOCH": ""}, "SOURCE_DATE_EPOCH=''"),
    (["--arch", "cpu"], {"DSV4_OWNER": ""}, "DSV4_OWNER"),
    (["--arch", "cpu"], {"DSV4_OWNER": "a..b"}, "'ghcr.io/a..b/dsv4-flash:cpu' is not a tag Docker accepts"),
    (["patches", "--arch", "cpu"], {"DSV4_WHEEL_SERVER_PORT": "x"}, "DSV4_WHEEL_SERVER_PORT"),
    (["patches", "--arch", "cpu"], {"DSV4_PYPI_SIMPLE_URL": "pypi.org/simple"}, "DSV4_PYPI_SIMPLE_URL"),
    (["matrix"], {"DSV4_PROJECT_ROOT": ""}, "DSV4_PROJECT_ROOT"),
    (["--arch", "cpu", "--tag=Latest/x"], {}, "argument --tag"),
    (["--arch", "cpu", "--tag=" + "t" * 129], {}, "argument --tag"),
    (["--arch", "cpu", "--image=ghcr.io/acme/x@sha256:" + "a" * 64], {}, "argument --image"),
    (["--arch", "cpu", "--json"], {}, "--json prints the plan and needs --dry-run"),
    (["--arch="], {}, "argument --arch"),
    (["demo", "--port=65536"], {}, "argument --port"),
    (["demo", "--port=٨٠٠٠"], {}, "argument --port"),
    (["verify", "--url=http://127.0.0.1:9", "--temperature=-0.5"], {}, "argument --temperature"),
    (["verify", "--url=http://127.0.0.1:9", "--max-tokens=1e309"], {}, "argument --max-tokens"),
    (["verify", "--url=http://127.0.0.1:9", "--concurrency=1,,4"], {}, "argument --concurrency"),
    (["verify", "--url=http://127.0.0.1:9", "--run-timeout=1e23"], {}, "argument --run-timeout"),
    (["verify", "--url=http://user:pw@127.0.0.1:9"], {}, "credentials"),
    (["check", "localhost:99999/dsv4-flash:cpu"], {}, "registry port 99999 is not in 1-65535"),
    (["verify", "--url=http://127.0.0.1:9", "--image=localhost:0/x:y"], {}, "registry port 0 is not in 1-65535"),
    (["build", "--arch", "sm_103a", "--cubins-repository=file:///mirror"], {}, "argument --cubins-repository"),
    (["verify", "--url=http://127.0.0.1:9", "--json=/sys/dsv4-bad-input.json"], {}, "argument --json"),
    (["verify", "--url=http://127.0.0.1:9", "--prompt-set=../../../etc/passwd"], {}, "argument --prompt-set"),
    (["verify", "--url=http://127.0.0.1:9", "--arch=sm_90a"], {}, "unknown arch 'sm_90a'"),
    (["matrix", "--compact"], {}, "--compact shapes the JSON and needs --json"),
    (["lock", "--dev", "--arch", "cpu"], {}, "--dev locks requirements/dev.txt only"),
]


def build_py(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), *args], capture_output=True, text=True,
                          errors="replace", env={**os.environ, **NOWHERE, **(env or {})}, timeout=120, **kwargs)


@pytest.mark.parametrize("argv, env, names", CLI_SUBSET, ids=[f"{i}" for i in range(len(CLI_SUBSET))])
def test_a_representative_subset_in_real_processes(argv, env, names):
    result = build_py(*argv, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], result.stderr


ENTRYPOINT_SUBSET = [  # (environment, what the one error line must name)
    ({"NUM_SPECULATIVE_TOKENS": "9"}, "NUM_SPECULATIVE_TOKENS='9' is not an integer between 0 and 8"),
    ({"PORT": "0"}, "PORT='0'"), ({"PORT": "８０"}, "PORT="), ({"MAX_MODEL_LEN": "1e309"}, "MAX_MODEL_LEN='1e309'"),
    ({"HOST": "0.0.0.0; id"}, "HOST="), ({"HOST": "192.0.2.1"}, "cannot be listened on here"),
    ({"VLLM_EXTRA_ARGS": "--seed 'a"}, "VLLM_EXTRA_ARGS cannot be parsed"), ({"DSV4_SKIP_PREFLIGHT": "false"}, None),
    ({"DSV4_SKIP_PREFLIGHT": "maybe"}, "DSV4_SKIP_PREFLIGHT='maybe'"), ({"MODEL": "/nonexistent/ckpt"}, "MODEL="),
    ({"DSV4_CHECKPOINT_PROFILE": ""}, "DSV4_CHECKPOINT_PROFILE is set but empty"),
    ({"MODEL_REVISION": "../../x"}, "MODEL_REVISION="), ({"SERVED_MODEL_NAME": "-x"}, "SERVED_MODEL_NAME="),
]


@pytest.fixture(scope="module")
def image_layout(image_files, tmp_path_factory):
    """entrypoint.py and its siblings as /opt/dsv4-flash/ holds them (no dsv4_images package)."""
    opt = tmp_path_factory.mktemp("opt")
    for rel in matrix.IN_IMAGE_FILES:
        if rel.endswith(".py"):
            shutil.copy(REPO_ROOT / rel, opt / Path(rel).name)
    return opt


@pytest.mark.parametrize("env, names", ENTRYPOINT_SUBSET, ids=[f"{i}" for i in range(len(ENTRYPOINT_SUBSET))])
def test_the_entrypoint_script_refuses_in_one_line(image_layout, image_files, env, names):
    """Serve mode: nothing may reach exec (vllm is not installed here: exec would be a traceback)."""
    result = subprocess.run([sys.executable, "-E", "-s", str(image_layout / "entrypoint.py")],
                            env={**image_env(image_files), "PATH": "/usr/bin:/bin", **env},
                            capture_output=True, text=True, timeout=120)
    if names is None:  # accepted: false is off, so the preflight runs (and passes) and exec is tried
        assert "preflight: MTP k=2: 44 MTP tensors found" in result.stderr, result.stderr
        assert result.returncode == 127 and "error: cannot start vllm: No such file or directory" in result.stderr
        return
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and errors[0].startswith("[dsv4-flash] error: ") and names in errors[0], result.stderr
