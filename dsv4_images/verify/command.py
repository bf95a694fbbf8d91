"""The `build.py verify` command line: arguments, the table, the JSON report and the exit code."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import matrix
from ..errors import UserError
from . import client, prompts, runner


def add_arguments(p) -> None:
    p.add_argument("--url", required=True, help="the deployment, e.g. http://127.0.0.1:8000")
    p.add_argument("--workload", default="all", choices=[*prompts.WORKLOADS, "all"])
    p.add_argument("--concurrency", default="1,4,8", help="comma-separated levels (default 1,4,8)")
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (0: greedy; > 0 also exercises the sampler)")
    p.add_argument("--json", type=Path, help="write the full report here")
    p.add_argument("--baseline-url", help="the same model served without MTP, for the speedup")
    p.add_argument("--arch", help="whose thresholds to apply (default: cpu when the tiny model is served)")
    p.add_argument("--prompt-set", default="v1")


def _concurrencies(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--concurrency {text!r}: expected comma-separated integers, e.g. 1,4,8") from None
    if not levels or levels[0] < 1:
        raise UserError(f"--concurrency {text!r}: levels must be >= 1")
    return levels


def _fmt(value, spec: str = ".1f", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table(report: dict) -> str:
    head = f"{'workload':<13}{'c':>3}{'req':>5}{'err':>5}{'corr':>5}{'trunc':>6}{'wrong':>6}{'acc':>7}" \
           f"{'tok/s':>9}{'req tok/s':>10}{'TPOT ms':>9}{'drafts':>8}{'accept':>8}{'len':>6}  per-pos"
    lines = [head, "-" * len(head)]
    for p in report["phases"]:
        s, cls = p["spec_decode"], p["classes"]
        per_pos = " ".join(f"{float(v):.2f}" for v in s["per_position_acceptance"].values())
        lines.append(f"{p['workload']:<13}{p['concurrency']:>3}{p['requests']:>5}{cls['errored']:>5}{cls['corrupted']:>5}"
                     f"{cls['truncated']:>6}{cls['wrong']:>6}{_fmt(p['accuracy'], '.0%'):>7}"
                     f"{p['output_tokens_per_s']:>9.1f}{_fmt(p['request_tokens_per_s_median']):>10}"
                     f"{_fmt(p['tpot_ms_median']):>9}{s['drafts']:>8}{_fmt(s['acceptance_rate'], '.1%'):>8}"
                     f"{_fmt(s['mean_acceptance_length'], '.2f'):>6}  {per_pos}")
        if "baseline" in p:
            b = p["baseline"]
            lines.append(f"{'  no MTP':<13}{p['concurrency']:>3}{'':>37}{b['output_tokens_per_s']:>9.1f}"
                         f"{_fmt(b['request_tokens_per_s_median']):>10}{_fmt(b['tpot_ms_median']):>9}"
                         f"   speedup x{_fmt(p.get('speedup_output_tokens_per_s'), '.2f')} (throughput), "
                         f"x{_fmt(p.get('speedup_decode_tpot'), '.2f')} (decode)")
    lines.append("")
    ref = report["reference"]
    for workload, acc in report["acceptance_by_workload"].items():
        minimum = report["thresholds"]["min_acceptance"].get(workload)
        card = ref["acceptance"].get(workload)
        lines.append(f"{workload:<13} acceptance {_fmt(acc['acceptance_rate'], '.1%')} "
                     f"(mean length {_fmt(acc['mean_acceptance_length'], '.2f')}); threshold {_fmt(minimum, '.0%')}, "
                     f"model card {_fmt(card, '.1%')}")
    if ref.get("output_tokens_per_s_c1"):
        lines.append(f"model card: {ref['output_tokens_per_s_c1']} output tok/s at c=1 on {report['target']}'s hardware")
    for r in report["concurrency_regressions"]:
        lines.append(f"REGRESSION {r['prompt']}: clean at c={r['clean_at']}, corrupted at c={r['corrupted_at']}: "
                     f"{'; '.join(r['symptoms'])[:160]}")
    verdict = report["verdict"]
    lines.append("PASS" if verdict["passed"] else "FAIL: " + " | ".join(verdict["failures"]))
    return "\n".join(lines)


def main(args, emit=print) -> int:
    started = time.monotonic()
    concurrencies = _concurrencies(args.concurrency)
    if args.max_tokens < 1:
        raise UserError("--max-tokens must be >= 1")
    model = client.served_model(args.url)
    baseline_model = client.served_model(args.baseline_url) if args.baseline_url else None
    m = matrix.load()
    cpu = m.resolve("cpu")
    rule = model == cpu.serve.served_model_name
    if args.arch:
        target = m.resolve(args.arch)
    elif rule:
        target = cpu
    else:
        raise UserError(f"{args.url} serves {model!r}: pass --arch (sm100, sm120) to choose the thresholds")
    version, selected = prompts.load(args.prompt_set)
    if args.workload != "all":
        selected = [p for p in selected if p.workload == args.workload]
    emit(f"verify: {args.url} serves {model}; prompt set {version}, {len(selected)} prompts x concurrency "
         f"{','.join(map(str, concurrencies))}, max_tokens {args.max_tokens}, temperature {args.temperature}"
         f"{'; tiny-model rule checked on every token' if rule else ''}")
    phases = runner.run(args.url, model, selected, concurrencies, args.max_tokens, args.temperature, rule,
                        args.baseline_url, baseline_model, emit)
    th = target.thresholds.model_dump()
    failures = runner.judge(phases, th)
    report = {
        "version": 1, "created": runner.now(), "url": args.url, "model": model, "baseline_url": args.baseline_url,
        "target": target.name, "prompt_set": version, "workload": args.workload, "concurrency": concurrencies,
        "max_tokens": args.max_tokens, "temperature": args.temperature, "rule_checked": rule,
        "thresholds": {k: th[k] for k in ("min_acceptance", "max_corrupted", "max_error_rate")},
        "reference": {"acceptance": th["reference_acceptance"], "output_tokens_per_s_c1": th["reference_output_tokens_per_s_c1"],
                      "source": "canada-quant/DeepSeek-V4-Flash-NVFP4-FP8-MTP model card"},
        "phases": phases, "acceptance_by_workload": runner.workload_acceptance(phases),
        "concurrency_regressions": runner.concurrency_regressions(phases),
        "verdict": {"passed": not failures, "failures": failures}, "elapsed_s": runner.elapsed_since(started),
    }
    emit(table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        emit(f"report: {args.json}")
    return 0 if not failures else 1
