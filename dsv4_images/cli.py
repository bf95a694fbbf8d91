"""The `dsv4-images` command line (also `python build.py`): one subcommand per job, each with its own --help.

    dsv4-images build --arch ARCH [--push] [--tag T]... [--dry-run] ...
    dsv4-images build --arch ARCH [--vllm wheel|sdist] ...
    dsv4-images render|lock|patches|base|demo|verify|repro|matrix|sbom|resolve-digests|resolve-externals ...
    python build.py --arch sm_103a --push      (no subcommand: `build`, as the design promises)

Every expected failure is one line on stderr (`error: ...`) and a non-zero exit, never a traceback;
so are argument errors (exit 2) and an unknown subcommand (named, with the closest valid one).
Every flag and every environment variable a subcommand reads (ENVIRONMENT) is checked before the
subcommand touches the Docker daemon or the network; flags a combination would ignore are refused.
A closed stdout (`| head -1`, `>&-`) is not an error: the command finishes with its own exit code.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import urllib.parse
from pathlib import Path

from . import __version__, inputs, matrix, references
from .errors import UserError

PROG = "dsv4-images"
_stdout = {"gone": False}


def _silence_stdout() -> None:
    """Nobody reads stdout any more: point it at /dev/null (so the interpreter's flush at exit is quiet too)."""
    _stdout["gone"] = True
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests), or no stdout at all
        pass


def _say(line: str) -> None:
    if _stdout["gone"] or sys.stdout is None:
        return
    try:
        print(line, flush=True)
    except BrokenPipeError:
        _silence_stdout()
    except OSError as exc:  # e.g. > /dev/full: what the command says is lost, so it stops
        raise UserError(f"cannot write to standard output: {exc.strerror or exc}") from None


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (`error: build: the following arguments are required: --arch`)."""

    def error(self, message: str):
        command = self.prog.split()[-1] if " " in self.prog else ""
        where = f"{command}: " if command else ""
        self.exit(2, f"error: {where}{message} (see `{self.prog} --help`)\n")


# ---- what the subcommands read -------------------------------------------------------------------

def _matrix() -> matrix.Matrix:
    """The one place this module loads matrix.toml: a file that is a directory or not UTF-8 is one line too."""
    path = matrix.MATRIX_PATH
    try:
        path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        pass  # matrix.load says so
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"not UTF-8 ({exc.reason} at byte {exc.start})" if isinstance(exc, UnicodeDecodeError) \
            else f"cannot be read ({exc.strerror or exc})"
        raise UserError(f"{path}: {reason}") from None
    return matrix.load()


def _owner(text: str) -> str:
    if not matrix.OWNER.fullmatch(text):
        raise ValueError(f"expected lowercase letters, digits, '.', '_' or '-' (starting with a letter or digit), "
                         f"got {inputs.shown(text)}")
    return text


def _project_root(text: str) -> str:
    try:
        found = bool(text) and (Path(text) / "matrix.toml").is_file()
    except OSError:  # a name too long for the file system
        found = False
    if not found:
        raise ValueError(f"expected the directory of a dsv4-flash checkout (with matrix.toml), got {inputs.shown(text)}")
    return text


def _cache_dir(text: str) -> str:
    inputs.writable_dir(text)  # the cache itself, or where it can be made
    return text


def _index_url(text: str) -> str:
    """A package index (PEP 503 simple API) URL; credentials in it are fine (requests sends them)."""
    try:
        parts = urllib.parse.urlsplit(text) if text.isascii() and text.isprintable() and " " not in text else None
        host = parts and parts.hostname
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        parts = host = None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise ValueError(f"expected an http(s) URL of a simple package index, e.g. https://pypi.org/simple, "
                         f"got {inputs.shown(text)}")
    return text


def _executable(text: str) -> str:
    if not (text.startswith("/") and os.path.isfile(text) and os.access(text, os.X_OK)):
        raise ValueError(f"expected the absolute path of an executable, got {inputs.shown(text)}")
    return text


def _directory(text: str) -> str:
    if not (text.startswith("/") and os.path.isdir(text)):
        raise ValueError(f"expected the absolute path of a directory, got {inputs.shown(text)}")
    return text


def _epoch(text: str) -> int:
    from . import provenance  # the one parser of SOURCE_DATE_EPOCH (its UserError names the variable)
    return provenance.parse_epoch(text)


BUILDS = ("build", "demo", "repro")
DOWNLOADS = ("build", "demo", "repro", "patches", "check")
ENVIRONMENT = {  # variable -> (the subcommands that read it, its check: a ValueError or UserError says why not)
    "SOURCE_DATE_EPOCH": (BUILDS, _epoch),
    "DSV4_OWNER": ((*BUILDS, "sbom"), _owner),
    "DSV4_CACHE": (DOWNLOADS, _cache_dir),
    "DSV4_PYPI_SIMPLE_URL": ((*DOWNLOADS, "sbom"), _index_url),
    "DSV4_WHEEL_SERVER_PORT": (DOWNLOADS, inputs.port),
    "DSV4_PROJECT_ROOT": (None, _project_root),  # None: every subcommand
    "DSV4_PYTHON312": (("prove",), _executable),  # the CPython 3.12 prove's venv is made from
    "PYENV_ROOT": (("prove",), _directory),       # where prove looks for it otherwise
}


def check_environment(command: str, env=os.environ) -> None:
    for name, (commands, check) in ENVIRONMENT.items():
        if name in env and (commands is None or command in commands):
            inputs.value(check, name, env[name])


# ---- the subcommands ------------------------------------------------------------------------------

def cmd_build(args) -> int:
    from . import builder, docker_client, plan, provenance
    if args.json and not args.dry_run:
        raise UserError("build: --json prints the plan and needs --dry-run", exit_code=2)
    m = _matrix()
    build = plan.make(m, m.resolve(args.arch), provenance.current(), image=args.image, owner=args.owner,
                      tags=args.tag, push=args.push, no_cache=args.no_cache, unpatched=args.unpatched,
                      reproducible=args.reproducible or None, vllm=args.vllm, flashinfer_modules=args.flashinfer_modules,
                      cubins_repository=args.cubins_repository)
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
    m = _matrix()
    if args.check:
        drifted = render.check(m)
        return _report_check([f"{rel} differs from what templates/ and matrix.toml produce" for rel in drifted],
                             "python build.py render", f"render --check: {len(render.render_all(m))} generated files match")
    written = render.write(m)
    _say("\n".join(f"wrote {rel}" for rel in written) or "render: everything already up to date")
    return 0


def cmd_matrix(args) -> int:
    if args.compact and not args.json:
        raise UserError("matrix: --compact shapes the JSON and needs --json", exit_code=2)
    m = _matrix()
    if args.json:
        _say(m.as_json(kind=args.kind, compact=args.compact))
    else:
        for t in m.targets.values():
            if not args.kind or t.kind == args.kind:
                _say(f"{t.name:6} {t.description}  [{', '.join(t.aliases)}]")
    return 0


def cmd_lock(args) -> int:
    from . import locks
    if args.dev and (args.arch or args.check):
        raise UserError("lock: --dev locks requirements/dev.txt only; it takes neither --arch nor --check", exit_code=2)
    if args.check and args.arch:
        raise UserError("lock: --check checks every target's locks; it takes no --arch", exit_code=2)
    m = _matrix()
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
    target = _matrix().resolve(args.arch)
    ref = base.ensure_base(docker_client.connect(), target, _say, force_bootstrap=args.force,
                           update_manifest=args.update_manifest)
    _say(f"base for {target.name}: {ref}")
    return 0


def cmd_patches(args) -> int:
    from . import patches
    m = _matrix()
    targets = [m.resolve(args.arch)] if args.arch else list(m.targets.values())
    for line in patches.check_targets(targets, progress=_say):
        _say(line)
    return 0


def cmd_demo(args) -> int:
    from . import demo
    return demo.main(args, emit=_say, m=_matrix())


def cmd_verify(args) -> int:
    from .verify import command
    return command.main(args, emit=_say, m=_matrix())


def cmd_repro(args) -> int:
    from . import plan, repro
    m = _matrix()
    target = m.resolve(args.arch)
    plan.check_module_set(target, args.flashinfer_modules)  # before two builds start
    return repro.main(m, target, emit=_say, flashinfer_modules=args.flashinfer_modules)


def cmd_check(args) -> int:
    from .attest import check
    return check.main(_matrix(), args.reference, emit=_say, use_cache=args.use_cache, keep=args.keep)


def cmd_prove(args) -> int:
    from .prove import command
    return command.main(_matrix().resolve(args.arch), args, emit=_say)


def cmd_sbom(args) -> int:
    from . import REPO_ROOT, docker_client
    from .attest import expect, sbom
    m = _matrix()
    target = m.resolve(args.arch)
    client = docker_client.connect()
    build = expect.plan_for_image(client, m, target, args.image)
    path = sbom.generate(client, m, build, args.image, Path(args.output) if args.output else REPO_ROOT / "reports")
    _say(f"sbom: {sbom.summary(path)}")
    return 0


def cmd_resolve_digests(args) -> int:
    from . import digests
    return digests.main(_matrix(), emit=_say)


def cmd_resolve_externals(args) -> int:
    from . import resolve_externals
    return resolve_externals.main(matrix.load(), emit=_say)


# ---- the parser ---------------------------------------------------------------------------------

ARCH = inputs.flag(inputs.word)


def _repository(text: str) -> str:
    if ":" in text.rpartition("/")[2] or "@" in text:
        raise ValueError(f"expected a repository without a tag or digest (tags come from --tag), got {inputs.shown(text)}")
    problem = references.tag_target_problem(text)
    if problem:
        raise ValueError(f"{inputs.shown(text)} is not an image name Docker accepts: {problem}")
    return text


def _tag(text: str) -> str:
    """A tag (appended to the image) or, with a '/' or ':', a whole reference."""
    whole = "/" in text or ":" in text
    problem = references.tag_target_problem(text) if whole else \
        (None if references.TAG.fullmatch(text) else "1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)")
    if problem:
        raise ValueError(f"{inputs.shown(text)} is not a {'reference' if whole else 'tag'} Docker accepts: {problem}")
    return text


def _module_set(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]{1,40}", value):
        raise ValueError("a module set name: lowercase letters, digits and '_'")
    return value


def _build_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, type=ARCH, help="target or alias: sm_100a, sm_103a, sm_120, cpu, ...")
    p.add_argument("--push", action="store_true", help="push every tag after the build")
    p.add_argument("--tag", action="append", type=inputs.flag(_tag),
                   help="tag, or a whole reference with '/' or ':' (repeatable); replaces the default tags")
    p.add_argument("--image", type=inputs.flag(_repository), help="image repository (default ghcr.io/<owner>/dsv4-flash)")
    p.add_argument("--owner", type=inputs.flag(_owner), help="owner in the default image name (or $DSV4_OWNER)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; needs no daemon")
    p.add_argument("--no-cache", action="store_true", help="build without the layer cache")
    p.add_argument("--unpatched", action="store_true", help="build without the target's patches (tests)")
    p.add_argument("--reproducible", action="store_true",
                   help="rewrite timestamps to SOURCE_DATE_EPOCH after the build (always on with --push)")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--vllm", choices=["wheel", "sdist"],
                   help="get vLLM from PyPI's locked wheel or compile the pinned sdist (default: the target's, see matrix.toml)")
    p.add_argument("--flashinfer-modules", metavar="SET", type=inputs.flag(_module_set),
                   help="FlashInfer AOT module set: full (default, a release image) or a named smaller set (matrix.toml)")
    p.add_argument("--cubins-repository", metavar="URL", type=inputs.flag(inputs.http_url),
                   help="where the sm100 build gets FlashInfer's trtllm-gen cubins (default: NVIDIA's artifact server, "
                        "matrix.toml); a mirror with the same paths gives the same image: the pins decide the bytes")


def _sbom_arguments(p: argparse.ArgumentParser) -> None:
    from .prove.command import image_reference
    p.add_argument("--arch", required=True, type=ARCH, help="the image's target: sm_100a, sm_120, cpu, ...")
    p.add_argument("--image", required=True, type=inputs.flag(image_reference),
                   help="a local image of that target (name[:tag][@digest] or sha256:ID)")
    p.add_argument("--output", type=inputs.flag(_cache_dir),
                   help="directory for sbom-<target>.cdx.json, made if missing (default reports/)")


def _verify_arguments(p: argparse.ArgumentParser) -> None:
    from .verify.command import add_arguments
    add_arguments(p)


def _prove_arguments(p: argparse.ArgumentParser) -> None:
    from .prove.command import add_arguments
    add_arguments(p)


SUBCOMMANDS = {  # name -> (help, arguments, handler)
    "build": ("build (and push) one target's image", _build_arguments, cmd_build),
    "render": ("regenerate Dockerfile.<target> and serve_defaults/ from templates/ and matrix.toml",
               lambda p: p.add_argument("--check", action="store_true",
                                        help="fail, naming the file, when a committed generated file drifts"),
               cmd_render),
    "lock": ("re-resolve the hash-locked requirements (uv) after a matrix change", lambda p: (
        p.add_argument("--arch", type=ARCH, help="one target only"),
        p.add_argument("--dev", action="store_true", help="lock requirements/dev.txt instead"),
        p.add_argument("--check", action="store_true", help="fail when a lock is stale")), cmd_lock),
    "patches": ("apply every target's patch series to the pinned vLLM source",
                lambda p: p.add_argument("--arch", type=ARCH, help="one target only"), cmd_patches),
    "base": ("make a target's Debian base (cpu: pull by digest, else mmdebstrap; sm: mmdebstrap)", lambda p: (
        p.add_argument("--arch", type=ARCH, default="cpu"),
        p.add_argument("--force", action="store_true", help="bootstrap even if the pinned base can be had"),
        p.add_argument("--update-manifest", action="store_true",
                       help="bootstrap and write the package manifest it gave (a reviewed change)")), cmd_base),
    "demo": ("build the cpu image, serve the tiny MTP model, print acceptance and corrupted-output counts", lambda p: (
        p.add_argument("--keep", action="store_true", help="leave the server running"),
        p.add_argument("--port", type=inputs.flag(inputs.port), default=8000,
                       help="host port on 127.0.0.1 for the server (1-65535, free; default 8000)")), cmd_demo),
    "verify": ("verify a running deployment: MTP fires, acceptance, no corrupted output", _verify_arguments,
               cmd_verify),
    "prove": ("execute the sm images' claims as far as vLLM's code, CMake and nvcc go without a GPU",
              _prove_arguments, cmd_prove),
    "repro": ("build twice without the layer cache and compare bit for bit", lambda p: (
        p.add_argument("--arch", type=ARCH, default="cpu"),
        p.add_argument("--flashinfer-modules", metavar="SET", type=inputs.flag(_module_set),
                       help="an sm target's FlashInfer module set (default: ci, which compiles one module)")), cmd_repro),
    "check": ("rebuild a published image from this checkout, compare it with the registry's bit for bit, and verify "
              "the SBOM, provenance and receipts attached to it", lambda p: (
        p.add_argument("reference", metavar="REF", type=inputs.flag(inputs.registry_reference),
                       help="the published image, e.g. ghcr.io/OWNER/dsv4-flash:sm120 or ...@sha256:..."),
        p.add_argument("--use-cache", action="store_true",
                       help="rebuild with the layer cache and cache mounts (faster; the default rebuilds clean)"),
        p.add_argument("--keep", action="store_true", help="keep the rebuilt image (tag dsv4-flash-check:...)")),
              cmd_check),
    "matrix": ("list the targets, or the CI matrix as JSON", lambda p: (
        p.add_argument("--json", action="store_true", help="the CI matrix as JSON"),
        p.add_argument("--kind", choices=["cuda", "cpu"], help="only targets of this kind"),
        p.add_argument("--compact", action="store_true", help="with --json: one line (for $GITHUB_OUTPUT)")), cmd_matrix),
    "sbom": ("write an image's CycloneDX SBOM, cross-checked against the locks and its labels' plan",
             _sbom_arguments, cmd_sbom),
    "resolve-digests": ("re-check the pinned base digests against the registry (where one is reachable)",
                        lambda p: None, cmd_resolve_digests),
    "resolve-externals": ("fill in the commit and sha256 of every source vLLM's CMake fetches (where github.com is "
                          "reachable)", lambda p: None, cmd_resolve_externals),
}


def _versions() -> str:
    try:
        by_vllm: dict[str, list[str]] = {}
        for t in _matrix().targets.values():
            by_vllm.setdefault(f"{t.vllm.package or 'vllm'} {t.vllm.version}", []).append(t.name)
        pins = "; ".join(f"{v}: {', '.join(names)}" for v, names in by_vllm.items())
    except UserError as exc:
        pins = f"matrix unreadable: {exc}"
    return f"{PROG} {__version__} ({pins})"


class _Version(argparse.Action):
    """--version, with the vLLM pins read from the matrix only when it is asked for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(_versions() + "\n", sys.stdout)  # argparse's own version action prints there too
        parser.exit(0)


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    top = _Parser(prog=prog, description="Build, publish and verify the dsv4-flash images (see README.md).")
    top.add_argument("--version", action=_Version, help="show the version and the vLLM pins, then exit")
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
        check_environment(args.command)
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
    _stdout["gone"] = False
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv), prog)
        if sys.stdout is not None and not _stdout["gone"]:
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `dsv4-images --help | head -1` (argparse's own output): the reader went away, which is not an error.
        _silence_stdout()
        return 0
