#!/usr/bin/env bash
# MTP acceptance on the cpu image at temperature 0, 0.6 and 1.0 with each draft sampling method
# (speculative_config.draft_sample_method greedy | probabilistic; known_issues.toml: draft-sample-greedy).
# A figure for notes, never a test: one server per method, `build.py verify --workload chat-code` at
# each temperature (11 prompts, c=1, 96 tokens), acceptance read from vLLM's spec-decode counters.
#   benchmarks/draft_sampling_cpu.sh [IMAGE]     (default: the image ./dev demo builds, dsv4-flash:cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-ghcr.io/dsv4-flash/dsv4-flash:cpu}
port=${PORT:-18000}
out=$(mktemp -d)
for method in greedy probabilistic; do
  name="dsv4-draft-sampling-$method"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker run -d --name "$name" --shm-size 1g -p "127.0.0.1:${port}:8000" "$image" \
    --speculative-config "{\"method\":\"mtp\",\"num_speculative_tokens\":2,\"draft_sample_method\":\"$method\"}" >/dev/null
  trap 'docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:${port}/health" >/dev/null && break; sleep 2; done
  for t in 0 0.6 1.0; do
    .venv/bin/python build.py verify --url "http://127.0.0.1:${port}" --workload chat-code --concurrency 1 \
      --max-tokens 96 --temperature "$t" --json "$out/$method-$t.json" >/dev/null || true
    .venv/bin/python - "$out/$method-$t.json" "$method" "$t" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
acc = report["acceptance_by_workload"]["chat-code"]
print(f"{sys.argv[2]:<14} T={sys.argv[3]:<4} acceptance {acc['acceptance_rate']:.1%}  mean length "
      f"{acc['mean_acceptance_length']:.2f}  verify {'passed' if report['verdict']['passed'] else 'FAILED'}")
PY
  done
  docker rm -f "$name" >/dev/null
done
