"""Checks on what verify could measure: /metrics, the spec-decode counters, the context limit,
the tiny model's rule, and every kind of failed request, one line per cause."""

from __future__ import annotations

from collections import Counter

from . import client, metrics, transport
from .checks import CANNOT, FAIL, PASS, Check
from .endpoint import Endpoint

NOT_THE_SERVERS = client.NOT_THE_SERVERS


def metrics_checks(ep: Endpoint, prefix: str = "", expect_mtp: bool = True) -> list[Check]:
    checks = []
    scrapes = len(ep.watch.scrapes)
    for kind, (n, detail) in ep.watch.problems().items():
        checks.append(Check(f"{prefix}{kind}", CANNOT, f"{n} of {scrapes} /metrics scrapes: {detail[:140]}",
                            {"scrapes": scrapes, "failed": n, "meaning": metrics.PROBLEMS.get(kind, "")}))
    readable = ep.watch.readable
    if not checks:
        checks.append(Check(f"{prefix}metrics-readable", PASS, f"{scrapes} /metrics scrapes readable"))
    if expect_mtp and readable and not any(c.present for c in readable):
        checks.append(Check(f"{prefix}spec-decode-present", FAIL,
                            "/metrics carries no vllm:spec_decode_* counters: speculative decoding is not configured "
                            "(or the server is not vLLM)"))
    elif expect_mtp and readable:
        checks.append(Check(f"{prefix}spec-decode-present", PASS, "vllm:spec_decode_* counters present"))
    if ep.watch.decreases:
        checks.append(Check(f"{prefix}counters-decreased", FAIL,
                            f"spec-decode counters went down {len(ep.watch.decreases)} times between scrapes, first "
                            f"{ep.watch.decreases[0]} (a restart, or several servers behind one URL); those windows "
                            "are not counted", {"decreases": ep.watch.decreases[:10]}))
    return checks


def context_check(ep: Endpoint, phases: list[dict], max_tokens: int) -> Check:
    limit = ep.info.max_model_len
    unjudged = sum(p.get("length_unjudged", 0) for p in phases)
    limited = sum(p["classes"].get("context-limited", 0) for p in phases)
    figures = {"max_model_len": limit, "max_tokens": max_tokens, "clamped_requests": len(ep.clamped),
               "context_limited_outputs": limited, "prompts_too_long": dict(ep.unfit),
               "tokenize": {None: "not needed", True: "offered", False: ep.counter.reason}[ep.counter.offered]}
    if ep.unfit:
        return Check("context", CANNOT, f"{len(ep.unfit)} prompts alone fill max_model_len {limit} and were not sent: "
                                        f"{', '.join(list(ep.unfit)[:4])}", figures)
    if unjudged:
        why = "states no max_model_len" if not limit else "gave no prompt token count"
        return Check("context", CANNOT, f"the server {why}: {unjudged} length stops before max_tokens cannot be told "
                                        "from a cut-off", figures)
    text = f"max_model_len {limit if limit else 'not stated'}"
    if ep.clamped:
        asked, allowed = next(iter(ep.clamped.values()))
        text += f"; max_tokens clamped on {len(ep.clamped)} requests (e.g. {asked} -> {allowed}) so prompt + max_tokens fits"
    if limited:
        text += f"; {limited} outputs stopped at the context limit (context-limited, not corrupted)"
    return Check("context", PASS, text, figures)


def rule_check(phases: list[dict], rule: bool) -> list[Check]:
    if not rule:
        return []
    missing = sum(p.get("rule_unjudged", 0) for p in phases)
    if missing:
        return [Check("rule", CANNOT, f"{missing} outputs came without the prompt's token ids: the tiny model's rule "
                                      "could not be checked on them")]
    return [Check("rule", PASS, "every output's tokens checked against the tiny model's rule")]


def request_checks(results: list[client.Result], error_rate_failed: bool) -> list[Check]:
    """One line per kind of failed request, with how many and the first example."""
    kinds = Counter(r.error_kind or "error" for r in results if r.error)
    checks = []
    for kind, n in kinds.most_common():
        example = next(r for r in results if r.error and (r.error_kind or "error") == kind)
        meaning = transport.KINDS.get(kind) or client.STREAM_KINDS.get(kind, "")
        status = CANNOT if kind in NOT_THE_SERVERS else FAIL if error_rate_failed else PASS
        note = " (within max_error_rate)" if status == PASS else ""
        checks.append(Check(f"request-{kind}", status, f"{n} of {len(results)} requests{note}: {example.request.id}: "
                                                       f"{example.error[:140]}", {"count": n, "meaning": meaning}))
    return checks
