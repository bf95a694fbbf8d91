#!/usr/bin/env bash
# Replicas of one image sharing one cache volume (deploy/compose's stacks) check at start that the volume is
# writable. This puts two containers of IMAGE on one fresh named volume at /home/dsv4/.cache and has each run
# the entrypoint's own check (runtime.cache_root) over and over for the same 3 s of wall time, then prints
# how many checks each container saw fail. A figure for notes, never a test (tests/unit/test_runtime.py holds
# the regression test); with RUNTIME_PY set, that file is mounted over the image's runtime.py, e.g. the
# PID-named probe that stop 22's CI tripped on:
#   git show 51852a1:dsv4_images/in_image/runtime.py > /tmp/old.py
#   RUNTIME_PY=/tmp/old.py benchmarks/cache_probe_race.sh dsv4-flash-test:cpu
#   benchmarks/cache_probe_race.sh [IMAGE] [ROUNDS]   (default: ghcr.io/dsv4-flash/dsv4-flash:cpu, 3)
set -euo pipefail
image=${1:-ghcr.io/dsv4-flash/dsv4-flash:cpu}
rounds=${2:-3}
[[ "$rounds" =~ ^[1-9][0-9]{0,2}$ ]] || { echo "cache_probe_race.sh: ROUNDS must be 1-999, got '$rounds'" >&2; exit 2; }
mount=()
if [[ -n "${RUNTIME_PY:-}" ]]; then
  [[ -f "$RUNTIME_PY" ]] || { echo "cache_probe_race.sh: RUNTIME_PY=$RUNTIME_PY is not a file" >&2; exit 2; }
  mount=(-v "$(realpath "$RUNTIME_PY")":/opt/dsv4-flash/runtime.py:ro)
fi
tag="dsv4-probe-race-$$"
trap 'docker rm -f "$tag-0" "$tag-1" >/dev/null 2>&1 || true; docker volume rm "$tag" >/dev/null 2>&1 || true' EXIT
for round in $(seq "$rounds"); do
  docker volume create "$tag" >/dev/null
  at=$(( $(date +%s) + 4 ))  # a common start: both containers are up by then
  for i in 0 1; do
    docker run -d --name "$tag-$i" "${mount[@]}" -v "$tag":/home/dsv4/.cache -e AT="$at" --entrypoint python3 "$image" -c '
import os, sys, time
sys.path.insert(0, "/opt/dsv4-flash")
import runtime
time.sleep(max(0, int(os.environ["AT"]) - time.time()))
failed = checks = 0
end = time.time() + 3
while time.time() < end:
    checks += 1
    try:
        runtime.cache_root({"HOME": "/home/dsv4"})
    except runtime.EnvironmentProblem:
        failed += 1
print(f"pid {os.getpid()}: {failed} of {checks} checks said not writable")' >/dev/null
  done
  for i in 0 1; do
    docker wait "$tag-$i" >/dev/null
    echo "round $round, container $i: $(docker logs "$tag-$i" 2>&1 | tail -1)"
    docker rm "$tag-$i" >/dev/null
  done
  docker volume rm "$tag" >/dev/null
done
