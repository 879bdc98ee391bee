#!/usr/bin/env bash
# The demo figures quoted in the README: `langclip demo` (default size) with and without English
# replay, each run's report/summary.json copied to benchmarks/results/ with the machine it ran on.
#   bash benchmarks/demo_summary.sh            (~5 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
for variant in replay no_replay; do
  flag=""; [ "$variant" = no_replay ] && flag="--no-english-replay"
  langclip demo --out "$tmp/$variant" $flag > "$tmp/$variant.log" 2>&1
  python - "$tmp/$variant/report/summary.json" "benchmarks/results/cpu_demo_$variant.json" <<'PY'
import json, os, platform, sys, time
s = json.load(open(sys.argv[1]))
s["machine"] = {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count(),
                "python": platform.python_version()}
json.dump(s, open(sys.argv[2], "w"), indent=1, ensure_ascii=False)
print(sys.argv[2], s["seconds"], "s")
PY
done
