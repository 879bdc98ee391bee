#!/usr/bin/env bash
# `langclip demo --lang LANG` at the default size, its report/summary.json (with the held-out search it
# answered) copied to benchmarks/results/cpu_demo_LANG.json with the machine it ran on.
#   bash benchmarks/demo_lang.sh de            (~2-4 minutes on 2 CPU cores)
#   bash benchmarks/demo_lang.sh el tiny /tmp/el.json    (another size and output file: the tests' smoke run)
set -euo pipefail
lang=${1:?usage: demo_lang.sh LANG [SIZE] [OUT.json]}
size=${2:-default}
cd "$(dirname "$0")/.."
result=${3:-benchmarks/results/cpu_demo_$lang.json}
tmp=$(mktemp -d)
demo=${DEMO_OUT:-$tmp/demo}     # DEMO_OUT: keep the demo's folder there
langclip demo --lang "$lang" --size "$size" --out "$demo" > "$tmp/demo.log" 2>&1 || { tail -20 "$tmp/demo.log"; exit 1; }
python - "$demo/report/summary.json" "$result" <<'PY'
import json, os, platform, sys, time
s = json.load(open(sys.argv[1]))   # its "search": the held-out query the demo answered (demo/run.py)
s["machine"] = {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count(),
                "python": platform.python_version()}
json.dump(s, open(sys.argv[2], "w"), indent=1, ensure_ascii=False)
print(sys.argv[2], s["seconds"], "s", s["search"]["query"], [h["shows"] for h in s["search"]["top5"]])
PY
