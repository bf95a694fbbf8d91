"""Build, serve and verify the dsv4-flash container images (see README.md).

The package works on a dsv4-flash checkout (matrix.toml, templates/, locks/, patches/): the one it
lives in when installed editable or run from the tree, else the nearest one above the current
directory, else $DSV4_PROJECT_ROOT."""

import os
from pathlib import Path

__version__ = "0.6.0"


def _project_root() -> Path:
    explicit = os.environ.get("DSV4_PROJECT_ROOT")
    if explicit:
        return Path(explicit).resolve()
    beside = Path(__file__).resolve().parent.parent
    if (beside / "matrix.toml").is_file():
        return beside
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "matrix.toml").is_file():
            return folder
    return beside  # matrix.load() then says in one line that matrix.toml is not found


REPO_ROOT = _project_root()
