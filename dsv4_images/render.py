"""Render Dockerfile.<target>, serve_defaults/<target>.json and deploy/ from templates/ and matrix.toml, and the
README's known-issues table from known_issues.toml.

Rendering is byte-for-byte deterministic: it depends on the matrix and the templates only
(never on the owner, the time or the machine). `check` compares against the committed files.
Every per-target value comes from the Target (matrix.py); this module only feeds the templates.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import jinja2

from . import REPO_ROOT, known_issues
from .deploy import render_files as render_deploy_files
from .errors import UserError
from .matrix import IMAGE_HOME, IMAGE_UID, IMAGE_USER, Matrix, Target

TEMPLATES = REPO_ROOT / "templates"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters["basename"] = lambda p: PurePosixPath(p).name
    # A double-quoted Dockerfile value: JSON string syntax without Jinja's HTML escapes (its tojson writes
    # ">" as \u003e, which a Dockerfile keeps literally).
    env.filters["dockerquote"] = lambda v: json.dumps(str(v), ensure_ascii=False)
    return env


def render_dockerfile(matrix: Matrix, target: Target) -> str:
    project = matrix.project
    derived = {
        "project": project,
        "source": project.source.format(owner=project.default_owner),
        "site_packages": target.site_packages,
        "serve_defaults": target.serve_defaults_path,
        "runtime_lock": target.lock_paths["runtime"],
        "build_lock": target.lock_paths.get("build"),
        "dist_alias_version": target.vllm.dist_alias,
        "env": target.image_env(),
        "labels": target.image_labels(),
        "user": IMAGE_USER, "uid": IMAGE_UID, "home": IMAGE_HOME,
    }
    try:
        text = _environment().get_template("Dockerfile.j2").render(t=target, r=derived)
    except jinja2.TemplateError as exc:
        raise UserError(f"templates/: rendering {target.name} failed: {exc}") from None
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def render_all(matrix: Matrix, root: Path = REPO_ROOT) -> dict[str, str]:
    """Relative path -> content of every generated file."""
    files = {}
    for target in matrix.targets.values():
        files[target.dockerfile] = render_dockerfile(matrix, target)
        files[target.serve_defaults_path] = json.dumps(target.serve_defaults(), indent=2, sort_keys=True) + "\n"
    files.update(render_deploy_files(matrix))  # deploy/k8s/, deploy/compose/
    if (root / "README.md").is_file():  # its known-issues section
        files["README.md"] = known_issues.readme_with_table((root / "README.md").read_text(), known_issues.load())
    return files


def write(matrix: Matrix, root: Path = REPO_ROOT) -> list[str]:
    written = []
    for rel, content in render_all(matrix, root).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            written.append(rel)
    return written


def check(matrix: Matrix, root: Path = REPO_ROOT) -> list[str]:
    """The generated files whose committed content differs from what the templates produce."""
    return [rel for rel, content in render_all(matrix, root).items()
            if not (root / rel).exists() or (root / rel).read_text() != content]
