"""The `build.py verify` command line: arguments, the table, the JSON report and the exit code.

Exit codes: 0 PASS; 1 a check FAILed; 3 nothing failed but something could not be judged; 2 with
one `error:` line for a bad argument (every one is checked before anything is sent: URLs, numbers
and their ranges, the report path's writability, the prompt set, --arch); 1 with one `error:` line
when nothing listens at --url. Whenever the verdict is not PASS, stderr gets exactly one line
naming the checks behind it.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback

from .. import inputs, matrix
from ..errors import UserError, write_file
from . import checks as checks_mod, measurable, prompts, runner, server, tools
from .checks import CANNOT, FAIL, PASS, SKIPPED, Check
from .endpoint import Endpoint
from .transport import Deadline, Timeouts


MAX_CONCURRENCY = 1024        # threads verify runs at once; far beyond any target's max_num_seqs
MAX_TOKENS = 1 << 20          # 1,048,576: DeepSeek-V4's context, the longest any target serves
MAX_TEMPERATURE = 2.0         # the OpenAI API's range; above it the sampler makes noise, not MTP
MAX_TIMEOUT = 7 * 24 * 3600   # a week: longer is a typo (and beyond what a timer takes)


def _concurrency_levels(text: str) -> list[int]:
    """Comma-separated levels, each 1-MAX_CONCURRENCY; spaces around a level are allowed; the levels
    run in ascending order, each once."""
    items = text.split(",")
    if not text.strip() or any(not item.strip() for item in items):
        raise ValueError(f"expected comma-separated integers, e.g. 1,4,8, got {inputs.shown(text)}")
    return sorted({inputs.integer(item.strip(), 1, MAX_CONCURRENCY) for item in items})


def _seconds(text: str) -> float:
    value = inputs.decimal(text, 0, MAX_TIMEOUT)
    if value <= 0:
        raise ValueError(f"expected a positive number of seconds up to {MAX_TIMEOUT}, got {inputs.shown(text)}")
    return value


def add_arguments(p) -> None:
    d = Timeouts()
    have = sorted(path.stem for path in prompts.PROMPTS_DIR.glob("*.json"))
    p.add_argument("--url", required=True, type=inputs.flag(inputs.http_url),
                   help="the deployment, e.g. http://127.0.0.1:8000")
    p.add_argument("--workload", default="all", choices=[*prompts.WORKLOADS, "tools", "all"],
                   help="a prompt workload, all three (all), or tool calling (tools: its own requests, greedy, "
                        "c=1; not part of all)")
    p.add_argument("--concurrency", default=[1, 4, 8], type=inputs.flag(_concurrency_levels),
                   help=f"comma-separated levels, each 1-{MAX_CONCURRENCY} (default 1,4,8)")
    p.add_argument("--max-tokens", type=inputs.flag(inputs.integer, 1, MAX_TOKENS), default=1024,
                   help=f"per request, 1-{MAX_TOKENS}; clamped to max_model_len minus the prompt where the server states it")
    p.add_argument("--temperature", type=inputs.flag(inputs.decimal, 0, MAX_TEMPERATURE), default=0.0,
                   help=f"sampling temperature, 0-{MAX_TEMPERATURE:g} (0: greedy; > 0 also exercises the sampler)")
    p.add_argument("--json", type=inputs.flag(inputs.writable_file),
                   help="write the full report here (checked writable before anything is sent)")
    p.add_argument("--metrics-url", action="append", default=[], metavar="URL", type=inputs.flag(inputs.http_url),
                   help="read spec-decode counters here instead of --url, summed (repeat it for each replica behind a "
                        "router: a router's own /metrics is one replica's at a time)")
    p.add_argument("--baseline-url", type=inputs.flag(inputs.http_url),
                   help="the same model served without MTP, for the speedup and the divergence signal")
    p.add_argument("--arch", type=inputs.flag(inputs.word), help="whose thresholds to apply (default: cpu when the tiny model is served)")
    p.add_argument("--prompt-set", default=prompts.DEFAULT_VERSION, choices=have)
    seconds = inputs.flag(_seconds)
    p.add_argument("--connect-timeout", type=seconds, help=f"seconds (default {d.connect:g})")
    p.add_argument("--first-byte-timeout", type=seconds,
                   help=f"seconds to the first byte of a response, and of any later gap (default {d.first_byte:g})")
    p.add_argument("--request-timeout", type=seconds, help=f"seconds per request (default {d.request:g})")
    p.add_argument("--run-timeout", type=seconds, help=f"seconds for the whole run (default {d.run:g})")
    p.add_argument("--image", metavar="REF", type=inputs.flag(inputs.registry_reference),
                   help="the image the deployment runs, in its registry: write the verdict as a receipt bound to its digest")
    p.add_argument("--receipt", type=inputs.flag(inputs.writable_file),
                   help="with --image: where the receipt goes (default ./verify-receipt-<digest>.intoto.json)")
    p.add_argument("--attach", action="store_true",
                   help="with --image: attach the receipt to the image in its registry (`dsv4-images check` lists it)")


def _timeouts(args) -> Timeouts:
    """Each bound within the one around it (connect and first byte within a request, a request within the
    run). A bound given that could never fire is refused; a default larger than a bound given around it
    is lowered to it."""
    d = Timeouts()
    given = {name: getattr(args, f"{name}_timeout", None) for name in ("connect", "first_byte", "request", "run")}
    run = given["run"] or d.run
    request = given["request"] or min(d.request, run)
    connect, first_byte = given["connect"] or min(d.connect, request), given["first_byte"] or min(d.first_byte, request)
    for inner, value, outer, limit in (("request", request, "run", run), ("connect", connect, "request", request),
                                       ("first_byte", first_byte, "request", request)):
        if given[inner] and value > limit:
            raise UserError(f"--{inner.replace('_', '-')}-timeout {value:g} is longer than the {outer} timeout "
                            f"({limit:g}s{'' if given[outer] else ', the default'}) and could never fire", exit_code=2)
    t = Timeouts(connect=connect, first_byte=first_byte, request=request, run=run).check()
    return Timeouts(t.connect, t.first_byte, t.request, t.run, get=min(t.get, t.request))


def _target_for(m, model: str, arch: str | None) -> tuple[str, dict, bool]:
    """The one place that reads the matrix: (target name, its thresholds, whether the tiny model's rule applies)."""
    cpu = m.resolve("cpu")
    rule = model == cpu.serve.served_model_name
    if arch:
        target = m.resolve(arch)
    elif rule:
        target = cpu
    else:
        raise UserError(f"the server serves {model!r}: pass --arch (sm100, sm120) to choose the thresholds")
    return target.name, target.thresholds.model_dump(), rule


def _fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table(report: dict) -> str:
    head = f"{'workload':<13}{'c':>3}{'req':>5}{'err':>5}{'corr':>5}{'trunc':>6}{'ctx':>5}{'wrong':>6}{'acc':>7}" \
           f"{'tok/s':>9}{'req tok/s':>10}{'TPOT ms':>9}{'drafts':>8}{'accept':>8}{'len':>6}  per-pos"
    lines = [head, "-" * len(head)] if report["phases"] else []
    for p in report["phases"]:
        s, cls = p["spec_decode"], p["classes"]
        per_pos = " ".join(f"{float(v):.2f}" for v in s["per_position_acceptance"].values())
        lines.append(f"{p['workload']:<13}{p['concurrency']:>3}{p['requests']:>5}{cls['errored']:>5}{cls['corrupted']:>5}"
                     f"{cls['truncated']:>6}{cls['context-limited']:>5}{cls['wrong']:>6}{_fmt(p['accuracy'], '.0%'):>7}"
                     f"{p['output_tokens_per_s']:>9.1f}{_fmt(p['request_tokens_per_s_median']):>10}"
                     f"{_fmt(p['tpot_ms_median']):>9}{_fmt(s['drafts'], 'd', '?'):>8}{_fmt(s['acceptance_rate'], '.1%'):>8}"
                     f"{_fmt(s['mean_acceptance_length'], '.2f'):>6}  {per_pos or s.get('problem', '')}")
        if "baseline" in p:
            b = p["baseline"]
            lines.append(f"{'  no MTP':<13}{p['concurrency']:>3}{'':>42}{b['output_tokens_per_s']:>9.1f}"
                         f"{_fmt(b['request_tokens_per_s_median']):>10}{_fmt(b['tpot_ms_median']):>9}"
                         f"   speedup x{_fmt(p.get('speedup_output_tokens_per_s'), '.2f')} (throughput), "
                         f"x{_fmt(p.get('speedup_decode_tpot'), '.2f')} (decode)")
    if lines:
        lines.append("")
    ref = report.get("reference", {})
    for workload, acc in report.get("acceptance_by_workload", {}).items():
        minimum = report["thresholds"]["min_acceptance"].get(workload)
        card = ref["acceptance"].get(workload)
        lines.append(f"{workload:<13} acceptance {_fmt(acc['acceptance_rate'], '.1%')} "
                     f"(mean length {_fmt(acc['mean_acceptance_length'], '.2f')}); threshold {_fmt(minimum, '.0%')}, "
                     f"model card {_fmt(card, '.1%')}")
    if ref.get("output_tokens_per_s_c1"):
        lines.append(f"model card: {ref['output_tokens_per_s_c1']} output tok/s at c=1 on {report['target']}'s hardware")
    for r in report.get("concurrency_regressions", []):
        lines.append(f"REGRESSION {r['prompt']}: clean at c={r['clean_at']}, corrupted at c={r['corrupted_at']}: "
                     f"{'; '.join(r['symptoms'])[:160]}")
    if report.get("tools"):
        lines += tools.table(report["tools"]["rows"])
    lines += ["", "checks:"] + ["  " + c.line() for c in report["_checks"]]
    verdict = report["verdict"]
    status = report["status"]
    reasons = [f.removeprefix("cannot judge: ") if status == CANNOT else f for f in verdict["failures"]]
    lines.append("PASS" if verdict["passed"] else f"{status}: " + " | ".join(reasons))
    return "\n".join(lines)


def _internal(exc: Exception) -> Check:
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return Check("verify-internal", CANNOT, f"verify failed: {type(exc).__name__}: {str(exc)[:120]} "
                                            f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}; a bug in verify)")


def _judge(args, mtp: Endpoint, baseline: Endpoint | None, baseline_problem: Check | None, selected, concurrencies,
           thresholds: dict, rule: bool, emit) -> tuple[dict, list[Check]]:
    run = runner.run(mtp, selected, concurrencies, args.max_tokens, args.temperature, rule, baseline, emit)
    phases = run.phases
    found = runner.threshold_checks(phases, thresholds)
    found.append(measurable.context_check(mtp, phases, args.max_tokens))
    found += measurable.metrics_checks(mtp)
    if baseline is not None:
        found += measurable.metrics_checks(baseline, prefix="baseline-", expect_mtp=False)
    found += measurable.rule_check(phases, rule)
    if not rule:
        found += runner.answer_checks(run.answers, len(selected))
    errors = [r for r in run.results if r.error and r.error_kind not in measurable.NOT_THE_SERVERS]
    found += measurable.request_checks(run.results, len(errors) > thresholds["max_error_rate"] * len(run.results))
    signals = run.signals
    if baseline_problem is not None:
        signals = [baseline_problem] + [s for s in signals if not (s.name == "baseline-identical" and s.status == SKIPPED)]
    found += signals
    extra = {"phases": phases, "acceptance_by_workload": runner.workload_acceptance(phases),
             "concurrency_regressions": runner.concurrency_regressions(phases), "canary_windows": run.canary}
    return extra, found


def _judge_tools(args, mtp: Endpoint, thresholds: dict, rule: bool) -> tuple[dict, list[Check]]:
    workload = tools.load()
    results = tools.run(mtp, workload, args.max_tokens, [])
    found = tools.checks(workload, results, rule)
    errors = [r for r in results if r.error and r.error_kind not in measurable.NOT_THE_SERVERS]
    found += measurable.request_checks(results, len(errors) > thresholds["max_error_rate"] * len(results))
    answers = [{"id": r.request.id, "finish_reason": r.finish_reason, "content": r.content[:300],
                "tool_calls": r.tool_calls, "error": r.error, "error_kind": r.error_kind} for r in results]
    return {"tools": {"version": workload.version, "rows": tools.summary(workload, results), "answers": answers}}, found


def main(args, emit=print, m=None) -> int:
    """Every argument is checked (argparse types, then the ones below) before anything is sent."""
    started = time.monotonic()
    concurrencies = args.concurrency
    if args.max_tokens < 1:
        raise UserError("--max-tokens must be >= 1")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: expected a finite number >= 0")
    timeouts = _timeouts(args)
    image = getattr(args, "image", None)
    if not image and (getattr(args, "attach", False) or getattr(args, "receipt", None)):
        raise UserError("--attach and --receipt bind the verdict to an image: they need --image REF", exit_code=2)
    m = m or matrix.load()
    if args.arch:
        m.resolve(args.arch)
    version, selected = prompts.load(args.prompt_set)
    deadline = Deadline(timeouts.run)
    report = {"version": 2, "created": runner.now(), "url": args.url, "baseline_url": args.baseline_url,
              "workload": args.workload, "concurrency": concurrencies, "max_tokens": args.max_tokens,
              "temperature": args.temperature, "prompt_set": args.prompt_set,
              "timeouts_s": {"connect": timeouts.connect, "first_byte": timeouts.first_byte, "request": timeouts.request,
                             "run": timeouts.run, "get": timeouts.get},
              "phases": []}
    found: list[Check] = []
    bound = None
    if image:  # resolved before anything is sent: a receipt is bound to a digest or not written at all
        from ..attest import receipts
        bound = receipts.resolve(image)
        report["image"] = {"reference": image, "repository": bound.name, "digest": bound.digest, "target": bound.target}
    try:
        info = server.describe(args.url, timeouts, deadline)
    except server.ServerProblem as exc:
        found.append(Check("server", CANNOT, exc.detail))
        return _finish(report, found, args, started, emit, bound)
    target_name, thresholds, rule = _target_for(m, info.model, args.arch)
    if bound is not None:
        same = bound.target == target_name
        found.append(Check("image", PASS if same else FAIL,
                           f"{bound.name}@{bound.digest[:19]}... is a {bound.target} image"
                           + ("" if same else f", but the server was judged as {target_name} (its model {info.model!r})")))
    if args.workload != "all":
        selected = [p for p in selected if p.workload == args.workload]
    report |= {"model": info.model, "server": info.as_dict(), "target": target_name, "prompt_set": version,
               "rule_checked": rule,
               "thresholds": {k: thresholds[k] for k in ("min_acceptance", "max_corrupted", "max_error_rate")},
               "reference": {"acceptance": thresholds["reference_acceptance"],
                             "output_tokens_per_s_c1": thresholds["reference_output_tokens_per_s_c1"],
                             "source": "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP model card"}}
    found.append(Check("server", PASS, f"{info.model}, max_model_len {info.max_model_len or 'not stated'}"))
    baseline, baseline_problem = None, None
    if args.baseline_url:
        try:
            baseline = Endpoint(server.describe(args.baseline_url, timeouts, deadline), timeouts, deadline)
        except server.ServerProblem as exc:
            baseline_problem = Check("baseline-server", CANNOT, exc.detail)
    if args.workload == "tools":
        workload = tools.load()
        emit(f"verify: {args.url} serves {info.model} (max_model_len {info.max_model_len or 'not stated'}); tools "
             f"workload {workload.version}: {len(workload.prompts)} prompts x tool_choice {'/'.join(tools.CHOICES)} x "
             f"streamed and not, greedy, c=1, max_tokens {min(args.max_tokens, tools.MAX_TOKENS)}"
             f"{'; the tiny model cannot choose tools: what it cannot do is SKIPPED by name' if rule else ''}")
    else:
        emit(f"verify: {args.url} serves {info.model} (max_model_len {info.max_model_len or 'not stated'}); prompt set "
             f"{version}, {len(selected)} prompts x concurrency {','.join(map(str, concurrencies))}, max_tokens "
             f"{args.max_tokens}, temperature {args.temperature}{'; tiny-model rule checked on every token' if rule else ''}")
    emit(f"timeouts: connect {timeouts.connect:g}s, first byte {timeouts.first_byte:g}s, request {timeouts.request:g}s, "
         f"run {timeouts.run:g}s")
    if info.max_model_len and args.max_tokens >= info.max_model_len and args.workload != "tools":
        emit(f"warning: --max-tokens {args.max_tokens} leaves no room for a prompt in max_model_len "
             f"{info.max_model_len}: each request's max_tokens is clamped to max_model_len minus its prompt")
    mtp = Endpoint(info, timeouts, deadline, metrics_urls=tuple(args.metrics_url))
    try:
        if args.workload == "tools":
            extra, judged = _judge_tools(args, mtp, thresholds, rule)
        else:
            extra, judged = _judge(args, mtp, baseline, baseline_problem, selected, concurrencies, thresholds, rule, emit)
        report |= extra
        found += judged
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a server sent, verify answers with a verdict, not a traceback
        found.append(_internal(exc))
    return _finish(report, found, args, started, emit, bound)


def _finish(report: dict, found: list[Check], args, started: float, emit, bound=None) -> int:
    report["checks"] = [c.as_dict() for c in found]
    report["status"] = checks_mod.status_of(found)
    report["verdict"] = checks_mod.verdict(found)
    report["elapsed_s"] = runner.elapsed_since(started)
    report["thresholds"] = report.get("thresholds", {"min_acceptance": {}})
    emit(table({**report, "_checks": found}))
    if args.json:
        write_file(args.json, json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                   f"cannot write the report to {args.json}")
        emit(f"report: {args.json}")
    if bound is not None:
        from ..attest import receipts
        path = args.receipt or receipts.default_path(bound)
        payload = receipts.write(bound, report, path)
        emit(f"receipt: {path} ({len(payload)} bytes, bound to {bound.name}@{bound.digest})")
        if args.attach:
            emit(f"receipt attached to {bound.name}@{bound.digest[:19]}...: {receipts.attach(bound, payload)}")
    code = checks_mod.exit_code(found)
    if code:
        print(checks_mod.summary(found), file=sys.stderr, flush=True)
    return code
