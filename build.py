#!/usr/bin/env python3
"""dsv4-flash images: render, build, push and verify. See README.md and `python build.py --help`."""

import sys

if sys.version_info < (3, 11):
    sys.exit("error: build.py needs Python 3.11 or newer")

try:
    from dsv4_images.cli import main
except ModuleNotFoundError as exc:
    sys.exit(f"error: {exc.name} is not installed; run ./dev setup (or pip install --require-hashes -r requirements/dev.txt)")

if __name__ == "__main__":
    sys.exit(main())
