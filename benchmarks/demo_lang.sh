#!/usr/bin/env bash
# `langclip demo --lang LANG` at the default size, its report/summary.json (and the search line's query
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
query=$(python -c "from langclip.demo.world import LANGS; print(LANGS['$lang'][0](2, 'red', 'star'))")
langclip search --index "$demo/index" --model "$demo/runs/clip" "$query" -k 5 --json > "$tmp/search.json"
python - "$demo/report/summary.json" "$result" "$tmp/search.json" "$query" <<'PY'
import json, os, platform, sys, time
s = json.load(open(sys.argv[1]))
import csv
from pathlib import Path
world = Path(sys.argv[1]).parents[1] / "world"
scene = {}
for row in csv.DictReader(open(world / "test.csv", encoding="utf-8")):   # what each test picture shows
    scene[Path(row["image"]).name] = f"{row['count']} {row['colour']} {row['shape']}"
hits = [json.loads(line) for line in open(sys.argv[3]) if line.strip()]
s["search"] = {"query": sys.argv[4], "top5": [{"rank": h["rank"], "score": h["score"], "picture": Path(h["path"]).name,
                                               "shows": scene.get(Path(h["path"]).name)} for h in hits]}
s["machine"] = {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count(),
                "python": platform.python_version()}
json.dump(s, open(sys.argv[2], "w"), indent=1, ensure_ascii=False)
print(sys.argv[2], s["seconds"], "s")
PY
