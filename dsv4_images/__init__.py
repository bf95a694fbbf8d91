"""Build, serve and verify dsv4-flash container images (see README.md)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
