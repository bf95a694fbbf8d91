"""The `dsv4-images` command line (also `python build.py`): one subcommand per job, each with its own --help.

    dsv4-images build --arch ARCH [--push] [--tag T]... [--dry-run] ...
    dsv4-images build --arch ARCH [--vllm wheel|sdist] ...
    dsv4-images render|lock|patches|base|demo|verify|repro|matrix|resolve-digests|resolve-externals ...
    python build.py --arch sm_103a --push      (no subcommand: `build`, as the design promises)

Every expected failure is one line on stderr (`error: ...`) and a non-zero exit, never a traceback;
so are argument errors (exit 2) and an unknown subcommand (named, with the closest valid one).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys

from . import __version__, matrix
from .errors import UserError

PROG = "dsv4-images"


def _say(line: str) -> None:
    print(line, flush=True)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (`error: build: the following arguments are required: --arch`)."""

    def error(self, message: str):
        command = self.prog.split()[-1] if " " in self.prog else ""
        where = f"{command}: " if command else ""
        self.exit(2, f"error: {where}{message} (see `{self.prog} --help`)\n")


# ---- the subcommands ------------------------------------------------------------------------------

def cmd_build(args) -> int:
    from . import builder, docker_client, plan, provenance
    m = matrix.load()
    build = plan.make(m, m.resolve(args.arch), provenance.current(), image=args.image, owner=args.owner,
                      tags=args.tag, push=args.push, no_cache=args.no_cache, unpatched=args.unpatched,
                      reproducible=args.reproducible or None, vllm=args.vllm)
    if args.dry_run:
        _say(build.as_json() if args.json else build.describe())
        return 0
    builder.execute(docker_client.connect(), m, build, emit=_say)
    return 0


def _report_check(problems: list[str], fix: str, ok: str) -> int:
    for problem in problems:
        print(f"error: {problem}; run `{fix}`", file=sys.stderr)
    if not problems:
        _say(ok)
    return 1 if problems else 0


def cmd_render(args) -> int:
    from . import render
    m = matrix.load()
    if args.check:
        drifted = render.check(m)
        return _report_check([f"{rel} differs from what templates/ and matrix.toml produce" for rel in drifted],
                             "python build.py render", f"render --check: {len(render.render_all(m))} generated files match")
    written = render.write(m)
    _say("\n".join(f"wrote {rel}" for rel in written) or "render: everything already up to date")
    return 0


def cmd_matrix(args) -> int:
    m = matrix.load()
    if args.json:
        _say(m.as_json(kind=args.kind, compact=args.compact))
    else:
        for t in m.targets.values():
            _say(f"{t.name:6} {t.description}  [{', '.join(t.aliases)}]")
    return 0


def cmd_lock(args) -> int:
    from . import locks
    m = matrix.load()
    if args.check:
        return _report_check([f"{rel} is stale with respect to matrix.toml" for rel in locks.stale(m)],
                             "python build.py lock", "lock --check: every lock matches matrix.toml")
    if args.dev:
        locks.write_dev_lock(progress=_say)
        return 0
    targets = [m.resolve(args.arch)] if args.arch else list(m.targets.values())
    written = locks.write_locks(m, targets, progress=_say)
    _say("\n".join(f"wrote {rel}" for rel in written) or "lock: everything already up to date")
    return 0


def cmd_base(args) -> int:
    from . import base, docker_client
    target = matrix.load().resolve(args.arch)
    _say(f"base for {target.name}: {base.ensure_base(docker_client.connect(), target, _say, force_bootstrap=args.force)}")
    return 0


def cmd_patches(args) -> int:
    from . import patches
    m = matrix.load()
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
    m = matrix.load()
    return repro.main(m, m.resolve(args.arch), emit=_say)


def cmd_resolve_digests(args) -> int:
    from . import digests
    return digests.main(matrix.load(), emit=_say)


def cmd_resolve_externals(args) -> int:
    from . import resolve_externals
    return resolve_externals.main(matrix.load(), emit=_say)


# ---- the parser ---------------------------------------------------------------------------------

def _build_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--vllm", choices=["wheel", "sdist"],
                   help="get vLLM from PyPI's locked wheel or compile the pinned sdist (default: the target's, see matrix.toml)")


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    from .verify.command import add_arguments
    add_arguments(p)


SUBCOMMANDS = {  # name -> (help, arguments, handler)
    "build": ("build (and push) one target's image", _build_arguments, cmd_build),
    "render": ("regenerate Dockerfile.<target> and serve_defaults/ from templates/ and matrix.toml",
               lambda p: p.add_argument("--check", action="store_true",
                                        help="fail, naming the file, when a committed generated file drifts"),
               cmd_render),
    "lock": ("re-resolve the hash-locked requirements (uv) after a matrix change", lambda p: (
        p.add_argument("--arch", help="one target only"),
        p.add_argument("--dev", action="store_true", help="lock requirements/dev.txt instead"),
        p.add_argument("--check", action="store_true", help="fail when a lock is stale")), cmd_lock),
    "patches": ("apply every target's patch series to the pinned vLLM source",
                lambda p: p.add_argument("--arch", help="one target only"), cmd_patches),
    "base": ("make the cpu target's Debian base (pull by digest, else mmdebstrap)", lambda p: (
        p.add_argument("--arch", default="cpu"),
        p.add_argument("--force", action="store_true", help="bootstrap even if the pinned base can be had")), cmd_base),
    "demo": ("build the cpu image, serve the tiny MTP model, print acceptance and corrupted-output counts", lambda p: (
        p.add_argument("--keep", action="store_true", help="leave the server running"),
        p.add_argument("--port", type=int, default=8000)), cmd_demo),
    "verify": ("verify a running deployment: MTP fires, acceptance, no corrupted output", _verify_arguments,
               cmd_verify),
    "repro": ("build twice without the layer cache and compare bit for bit",
              lambda p: p.add_argument("--arch", default="cpu"), cmd_repro),
    "matrix": ("list the targets, or the CI matrix as JSON", lambda p: (
        p.add_argument("--json", action="store_true", help="the CI matrix as JSON"),
        p.add_argument("--kind", choices=["cuda", "cpu"], help="only targets of this kind"),
        p.add_argument("--compact", action="store_true", help="one line (for $GITHUB_OUTPUT)")), cmd_matrix),
    "resolve-digests": ("re-check the pinned base digests against the registry (where one is reachable)",
                        lambda p: None, cmd_resolve_digests),
    "resolve-externals": ("fill in the commit and sha256 of every source vLLM's CMake fetches (where github.com is "
                          "reachable)", lambda p: None, cmd_resolve_externals),
}


def _versions() -> str:
    try:
        by_vllm: dict[str, list[str]] = {}
        for t in matrix.load().targets.values():
            by_vllm.setdefault(f"{t.vllm.package or 'vllm'} {t.vllm.version}", []).append(t.name)
        pins = "; ".join(f"{v}: {', '.join(names)}" for v, names in by_vllm.items())
    except UserError as exc:
        pins = f"matrix unreadable: {exc}"
    return f"{PROG} {__version__} ({pins})"


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    top = _Parser(prog=prog, description="Build, publish and verify the dsv4-flash images (see README.md).")
    top.add_argument("--version", action="version", version=_versions())
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, arguments, handler) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        arguments(p)
        p.set_defaults(func=handler)
    return top


def _normalize(argv: list[str]) -> list[str]:
    """`build.py --arch X ...` (no subcommand) means `build --arch X ...`; an unknown subcommand is one line."""
    if not argv:
        return argv
    first = argv[0]
    if first.startswith("-"):
        return argv if first in ("-h", "--help", "--version") else ["build", *argv]
    if first not in SUBCOMMANDS:
        close = difflib.get_close_matches(first, SUBCOMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown command '{first}'{hint} (commands: {', '.join(SUBCOMMANDS)})", exit_code=2)
    return argv


def _run(argv: list[str], prog: str) -> int:
    try:
        top = parser(prog)
        args = top.parse_args(_normalize(argv))
        if not getattr(args, "func", None):
            top.print_help()
            return 2
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only the Docker daemon's own failures become one line
        from . import docker_client
        if not docker_client.is_daemon_failure(exc):
            raise  # our own bugs keep their traceback
        print(f"error: {docker_client.explain_failure(exc)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv), prog)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `dsv4-images matrix --json | head -1`: the reader went away, which is not an error. Point stdout
        # at /dev/null so the interpreter's own flush at exit does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
