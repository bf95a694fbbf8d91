"""`build.py demo`: the README's main job on the cpu target, end to end.

Builds the cpu image (cached after the first run), starts it with the tiny MTP model, sends
completions and chats at temperature 0 and 0.8, and prints what a user needs to see: MTP fired,
its acceptance, and how many outputs were corrupted.
"""

from __future__ import annotations

import errno
import socket

from . import builder, docker_client, matrix, plan, provenance, serving
from .errors import UserError
from .verify import client, phase

PROMPTS = ["def fibonacci(n):", "Write a haiku about the sea.", "The capital of France is",
           "Explain speculative decoding in one sentence.", "用一句话介绍你自己。", "import numpy as np\n"]


def demo_requests(temperature: float) -> list[client.Request]:
    return [client.Request(f"{kind}-{i}", p, kind=kind, max_tokens=64, temperature=temperature, seed=i)
            for i, p in enumerate(PROMPTS) for kind in ("completion", "chat")]


def check_port_free(port: int) -> None:
    """The server's host port, checked before the build: one line when something already listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            hint = (f" (a demo left running with --keep? docker rm -f dsv4-flash-demo-{port}); choose another --port"
                    if exc.errno == errno.EADDRINUSE else "")
            raise UserError(f"demo: --port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror}{hint}") from None


def main(args, emit=print, m: matrix.Matrix | None = None) -> int:
    m = m or matrix.load()  # the one use of matrix.toml here (the command line passes the one it checked)
    target = m.resolve("cpu")
    p = plan.make(m, target, provenance.current())
    check_port_free(args.port)
    builder.execute(docker_client.connect(), m, p, emit=emit)
    name = f"dsv4-flash-demo-{args.port}"
    c = serving.container(p.tags[0], host_port=("127.0.0.1", args.port)).with_name(name)
    emit(f"starting {p.tags[0]} as {name}; waiting for http://127.0.0.1:{args.port}/health")
    server = serving.start(c, timeout=900)
    url, model = server.url, server.model
    try:
        emit(f"healthy after {server.start_to_healthy_s:.0f}s, serving {model}")
        total_corrupted = 0
        for temperature in (0.0, 0.8):
            for concurrency in (1, 4):
                ph = phase.measure(url, model, demo_requests(temperature), concurrency, rule=True)
                rate = ph.spec.acceptance_rate
                total_corrupted += len(ph.corrupted)
                emit(f"T={temperature} c={concurrency}: {len(ph.outcomes)} requests, {ph.errors} errors, "
                     f"{ph.output_tokens_per_s:.0f} output tok/s, MTP drafts {int(ph.spec.drafts)}, "
                     f"acceptance {rate:.1%} (mean length {ph.spec.mean_acceptance_length:.2f}), "
                     f"corrupted outputs {len(ph.corrupted)}, rule-breaking tokens {ph.rule_violations}/{ph.generated_tokens}"
                     if rate is not None else f"T={temperature} c={concurrency}: MTP did not fire")
        sample = client.send(url, model, client.Request("sample", "Say something.", max_tokens=24))
        emit(f"sample chat answer: {sample.text!r}")
        emit("verdict: " + ("MTP fires and no output is corrupted" if total_corrupted == 0
                            else f"{total_corrupted} corrupted outputs"))
        if args.keep:
            emit(f"left running: {url} (docker rm -f {name} to stop)")
        return 0 if total_corrupted == 0 else 1
    finally:
        if not args.keep:
            serving.stop(c)
