"""Run a GitHub Actions job's `run:` steps here, in order, in a fresh clone with a fresh virtual
environment: a test-only stand-in for a hosted runner (test code, never imported by the package).

Stood in, and only these:
- `uses:` actions: checkout is the fresh clone itself; setup-python is a new, empty venv put first on
  PATH (so `python` and `pip` are the job's own and nothing is installed until a step installs it);
  every other action (buildx, login, build-push) is recorded, not run.
- what only a GPU runner or a registry has: steps listed in `standins` by id or name get a
  replacement command (e.g. the `docker buildx imagetools inspect` that resolves a pushed digest).
- test suites the jobs run: `PYTEST_ADDOPTS=--collect-only` makes them collect, not run, the suite
  this CI run is already running, so a step that runs pytest proves the project is installed and
  its selection collects something (pytest exits 5 when it collects nothing).
`${{ }}` expressions are evaluated for the forms the workflow uses: matrix.*, steps.ID.outputs.*,
needs.JOB.outputs.*, github.*, secrets.*, env.*, runner.temp.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class JobRun:
    job: str
    returncode: int = 0
    failed_step: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    skipped_uses: list[str] = field(default_factory=list)


def _read_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT / $GITHUB_ENV: `key=value` lines and `key<<DELIM` heredocs."""
    out, lines, i = {}, path.read_text().splitlines() if path.exists() else [], 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and "=" not in line.split("<<", 1)[0]:
            key, delim = line.split("<<", 1)
            body = []
            i += 1
            while i < len(lines) and lines[i] != delim:
                body.append(lines[i])
                i += 1
            out[key] = "\n".join(body)
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
        i += 1
    return out


class Context:
    def __init__(self, matrix: dict, github: dict, needs: dict, env: dict, temp: str):
        self.matrix, self.github, self.needs, self.env, self.temp = matrix, github, needs, env, temp
        self.steps: dict[str, dict] = {}

    def value(self, expr: str) -> str:
        parts = expr.split(".")
        if parts[0] == "matrix":
            return str(self.matrix[parts[1]])
        if parts[0] == "steps":  # steps.ID.outputs.KEY
            return self.steps.get(parts[1], {}).get(parts[3], "")
        if parts[0] == "needs":
            return self.needs[parts[1]][parts[3]]
        if parts[0] == "github":
            return str(self.github[parts[1]])
        if parts[0] == "secrets":
            return "stand-in-secret"
        if parts[0] == "env":
            return self.env.get(parts[1], "")
        if expr == "runner.temp":
            return self.temp
        raise ValueError(f"expression not understood by the stand-in runner: {expr}")

    def substitute(self, text: str) -> str:
        return EXPR.sub(lambda m: self.value(m.group(1)), text)


def run_job(workflow: dict, name: str, repo: Path, *, matrix: dict | None = None, needs: dict | None = None,
            standins: dict[str, str] | None = None, timeout: float = 900) -> JobRun:
    job = workflow["jobs"][name]
    result = JobRun(name)
    work = Path(tempfile.mkdtemp(prefix=f"wf-{name}-"))
    clone = work / "repo"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    github = {"repository_owner": "Acme", "sha": head, "actor": "stand-in", "event_name": "push",
              "ref": "refs/heads/main", "workspace": str(clone)}
    files = {k: work / k for k in ("output", "env", "summary")}
    for f in files.values():
        f.touch()
    path = os.environ["PATH"]
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), "CI": "true", "GITHUB_ACTIONS": "true",
           "GITHUB_REPOSITORY_OWNER": github["repository_owner"], "GITHUB_SHA": head, "GITHUB_WORKSPACE": str(clone),
           "GITHUB_OUTPUT": str(files["output"]), "GITHUB_ENV": str(files["env"]),
           "GITHUB_STEP_SUMMARY": str(files["summary"]), "RUNNER_TEMP": str(work),
           "PYTEST_ADDOPTS": "--collect-only -q",
           # Installs run as written, but without byte-compiling every file: a stand-in runner's speed only.
           "PIP_NO_COMPILE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **{k: v for k, v in os.environ.items() if k.startswith("DOCKER_")}}
    ctx = Context(matrix or {}, github, needs or {}, env, str(work))
    env.update({k: ctx.substitute(str(v)) for k, v in (job.get("env") or {}).items()})
    for index, step in enumerate(job["steps"]):
        label = step.get("id") or step.get("name") or step.get("uses") or f"step {index}"
        if "uses" in step:
            action = step["uses"].split("@")[0]
            if action == "actions/setup-python":  # a new, empty interpreter environment first on PATH
                venv = work / "python"
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                env["PATH"] = f"{venv / 'bin'}:{path}"
            elif action != "actions/checkout":
                result.skipped_uses.append(action)
            continue
        script = (standins or {}).get(step.get("id", "")) or (standins or {}).get(step.get("name", "")) or step["run"]
        step_env = {**env, **_read_outputs(files["env"]),
                    **{k: ctx.substitute(str(v)) for k, v in (step.get("env") or {}).items()}}
        files["output"].write_text("")
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", ctx.substitute(script)], cwd=clone, env=step_env,
                              capture_output=True, text=True, timeout=timeout)
        result.log.append(f"--- {label} (exit {done.returncode})\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        if step.get("id"):
            ctx.steps[step["id"]] = _read_outputs(files["output"])
        if done.returncode != 0:
            result.returncode, result.failed_step = done.returncode, label
            break
    for key, expr in (job.get("outputs") or {}).items():
        result.outputs[key] = ctx.substitute(expr) if result.returncode == 0 else ""
    shutil.rmtree(work, ignore_errors=True)  # a clone and a venv (~400 MB) per job
    return result
