"""The build.py command line: a thin layer over the package's modules.

    build.py --arch ARCH [--push] [--tag T] [--image NAME] [--owner O] [--dry-run] [--no-cache] [--unpatched]
    build.py render [--check]
    build.py matrix [--json]
    build.py lock [--arch ARCH] [--dev] [--check]
    build.py base [--force]
    build.py patches [--arch ARCH]
    build.py demo
    build.py verify --url URL ...
    build.py repro --arch cpu
    build.py resolve-digests
    build.py prove --arch ARCH [--report FILE]

Every expected failure is one line on stderr (`error: ...`) and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import matrix as matrix_mod
from .errors import UserError

COMMANDS = ("render", "matrix", "lock", "base", "patches", "demo", "verify", "repro", "resolve-digests", "prove")


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_build(args) -> int:
    from . import images
    m = matrix_mod.load()
    target = m.resolve(args.arch)
    p = images.plan(m, target, image=args.image, owner=args.owner, tags=args.tag, push=args.push,
                    no_cache=args.no_cache, unpatched=args.unpatched, reproducible=args.reproducible or None)
    if args.dry_run:
        _say(p.as_json() if args.json else p.describe())
        return 0
    images.execute(images.docker_client(), m, p, emit=_say)
    return 0


def cmd_render(args) -> int:
    from . import render
    m = matrix_mod.load()
    if args.check:
        drifted = render.check(m)
        for rel in drifted:
            print(f"error: {rel} differs from what templates/ and matrix.toml produce; run `python build.py render`",
                  file=sys.stderr)
        if not drifted:
            _say(f"render --check: {len(render.render_all(m))} generated files match")
        return 1 if drifted else 0
    written = render.write(m)
    _say("\n".join(f"wrote {rel}" for rel in written) or "render: everything already up to date")
    return 0


def cmd_matrix(args) -> int:
    m = matrix_mod.load()
    if args.json:
        _say(m.as_json(kind=args.kind, compact=args.compact))
    else:
        for t in m.targets.values():
            _say(f"{t.name:6} {t['description']}  [{', '.join(t['aliases'])}]")
    return 0


def cmd_lock(args) -> int:
    from . import locks
    m = matrix_mod.load()
    if args.check:
        out = locks.stale(m)
        for rel in out:
            print(f"error: {rel} is stale with respect to matrix.toml; run `python build.py lock`", file=sys.stderr)
        if not out:
            _say("lock --check: every lock matches matrix.toml")
        return 1 if out else 0
    if args.dev:
        locks.write_dev_lock(progress=_say)
        return 0
    targets = [m.resolve(args.arch)] if args.arch else list(m.targets.values())
    written = locks.write_locks(m, targets, progress=_say)
    _say("\n".join(f"wrote {rel}" for rel in written) or "lock: everything already up to date")
    return 0


def cmd_base(args) -> int:
    from . import base, images
    m = matrix_mod.load()
    target = m.resolve(args.arch)
    ref = base.ensure_base(images.docker_client(), target, _say, force_bootstrap=args.force)
    _say(f"base for {target.name}: {ref}")
    return 0


def cmd_patches(args) -> int:
    from . import patches
    m = matrix_mod.load()
    targets = [m.resolve(args.arch)] if args.arch else list(m.targets.values())
    for line in patches.check_targets(targets, progress=_say):
        _say(line)
    return 0


def cmd_demo(args) -> int:
    from . import demo
    return demo.main(args, emit=_say)


def cmd_verify(args) -> int:
    from .verify import command
    return command.main(args, emit=_say)


def cmd_repro(args) -> int:
    from . import repro
    m = matrix_mod.load()
    return repro.main(m, m.resolve(args.arch), emit=_say)


def cmd_resolve_digests(args) -> int:
    from . import digests
    return digests.main(matrix_mod.load(), emit=_say)


def cmd_prove(args) -> int:
    from .prove import command
    return command.main(matrix_mod.load().resolve(args.arch), args, emit=_say)


def parser_for(command: str | None) -> argparse.ArgumentParser:
    if command is None:
        p = argparse.ArgumentParser(prog="build.py", description="Build (and push) one target's image.",
                                    epilog=f"other commands: {', '.join(COMMANDS)} (build.py COMMAND --help)")
        p.add_argument("--arch", required=True, help="target or alias: sm_100a, sm_103a, sm_120, cpu, ...")
        p.add_argument("--push", action="store_true", help="push every tag after the build")
        p.add_argument("--tag", action="append", help="tag (repeatable); replaces the default tags")
        p.add_argument("--image", help="image repository (default ghcr.io/<owner>/dsv4-flash)")
        p.add_argument("--owner", help="owner in the default image name (or $DSV4_OWNER)")
        p.add_argument("--dry-run", action="store_true", help="print the plan; needs no daemon")
        p.add_argument("--no-cache", action="store_true", help="build without the layer cache")
        p.add_argument("--unpatched", action="store_true", help="build without the target's patches (tests)")
        p.add_argument("--reproducible", action="store_true",
                       help="rewrite timestamps to SOURCE_DATE_EPOCH after the build (always on with --push)")
        p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
        p.set_defaults(func=cmd_build)
        return p
    p = argparse.ArgumentParser(prog=f"build.py {command}")
    if command == "render":
        p.add_argument("--check", action="store_true", help="fail when a committed generated file drifts")
        p.set_defaults(func=cmd_render)
    elif command == "matrix":
        p.add_argument("--json", action="store_true", help="the CI matrix as JSON")
        p.add_argument("--kind", choices=["cuda", "cpu"], help="only targets of this kind")
        p.add_argument("--compact", action="store_true", help="one line (for $GITHUB_OUTPUT)")
        p.set_defaults(func=cmd_matrix)
    elif command == "lock":
        p.add_argument("--arch")
        p.add_argument("--dev", action="store_true", help="lock requirements/dev.txt instead")
        p.add_argument("--check", action="store_true", help="fail when a lock is stale")
        p.set_defaults(func=cmd_lock)
    elif command == "base":
        p.add_argument("--arch", default="cpu")
        p.add_argument("--force", action="store_true", help="bootstrap even if the pinned base can be had")
        p.set_defaults(func=cmd_base)
    elif command == "patches":
        p.add_argument("--arch")
        p.set_defaults(func=cmd_patches)
    elif command == "demo":
        p.add_argument("--keep", action="store_true", help="leave the server running")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(func=cmd_demo)
    elif command == "verify":
        from .verify.command import add_arguments
        add_arguments(p)
        p.set_defaults(func=cmd_verify)
    elif command == "repro":
        p.add_argument("--arch", default="cpu")
        p.set_defaults(func=cmd_repro)
    elif command == "resolve-digests":
        p.set_defaults(func=cmd_resolve_digests)
    elif command == "prove":
        from .prove.command import add_arguments as add_prove_arguments
        add_prove_arguments(p)
        p.set_defaults(func=cmd_prove)
    return p


def _daemon_failure(exc: Exception) -> str | None:
    """One line for a failure the Docker daemon reported mid-way (a full disk, a lost connection)."""
    from docker.errors import DockerException
    from requests import RequestException
    if not isinstance(exc, (DockerException, RequestException)):
        return None
    from . import images
    return images.explain_daemon_failure(exc)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = parser_for(command).parse_args(argv[1:] if command else argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - only the daemon's own failures become one line
        line = _daemon_failure(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `build.py ... | head`: the reader went away, which is not an error
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
