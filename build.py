#!/usr/bin/env python3
"""dsv4-flash images: `python build.py --arch sm_103a --push` builds (and pushes) one target's image.

A thin shim over the `dsv4-images` command line (dsv4_images/cli.py): `python build.py COMMAND ...`
is `dsv4-images COMMAND ...`, and with no command it means `build`. See `python build.py --help`."""

import sys

if sys.version_info < (3, 11):
    sys.exit("error: build.py needs Python 3.11 or newer")

try:
    from dsv4_images.cli import main
except ModuleNotFoundError as exc:
    sys.exit(f"error: {exc.name} is not installed; run ./dev setup (or pip install --require-hashes -r requirements/dev.txt && pip install --no-deps -e .)")

if __name__ == "__main__":
    sys.exit(main(prog="build.py"))
