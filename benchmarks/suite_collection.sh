#!/usr/bin/env bash
# The suite's collection (`pytest --collect-only -n 0`: every test module imported, what each xdist
# worker does before its first test) at two commits, alternating, 3 times each; one JSON line per run.
# Both are checked out from this repository into temporary folders and run with this environment's python.
#
#   bash benchmarks/suite_collection.sh BEFORE AFTER > benchmarks/results/cpu_suite_collection.jsonl
set -euo pipefail
before=${1:?usage: suite_collection.sh BEFORE AFTER}; after=${2:?usage: suite_collection.sh BEFORE AFTER}
root=$(git rev-parse --show-toplevel); tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for c in "$before" "$after"; do
  mkdir -p "$tmp/$c" && git -C "$root" archive "$c" | tar -x -C "$tmp/$c"
done
for i in 1 2 3; do
  for c in "$before" "$after"; do
    cd "$tmp/$c"
    t0=$(date +%s.%N)
    n=$(PYTHONPATH="$tmp/$c/src" python -m pytest --collect-only -q -n 0 -p no:cacheprovider 2>/dev/null | grep -c "::" || true)
    t1=$(date +%s.%N)
    python -c "import json,sys,os,platform; print(json.dumps({'commit': '$c', 'repeat': $i, 'tests': $n, 'seconds': round($t1 - $t0, 2), 'cpus': os.cpu_count(), 'arch': platform.machine()}))"
  done
done
