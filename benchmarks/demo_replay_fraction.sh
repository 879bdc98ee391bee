#!/usr/bin/env bash
# English replay of a fraction of each batch (loss.english_fraction): `langclip demo` (default size) with
# replay of every pair (1.0), of a quarter (0.25) and without replay, same machine, one after another;
# prints each run's English and Russian zero-shot acc@1 of the clip-init student and writes them to
# benchmarks/results/cpu_demo_replay_fraction.json.
#   bash benchmarks/demo_replay_fraction.sh      (~7 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
for variant in 1.0 0.25 none; do
  if [ "$variant" = none ]; then flag="--no-english-replay"; over=""; else flag=""; over="english_fraction=$variant"; fi
  langclip demo --out "$tmp/$variant" $flag $over > "$tmp/$variant.log" 2>&1
done
python - "$tmp" <<'PY'
import json, os, platform, sys, time
rows = {}
for v in ("1.0", "0.25", "none"):
    s = json.load(open(os.path.join(sys.argv[1], v, "report", "summary.json")))
    rows[v] = {r["task"]: {k: r[k] for k in ("teacher EN", "student RU clip", "student EN clip") if k in r}
               for r in s["zero_shot"]}
    rows[v]["seconds"] = s["seconds"]
out = {"machine": {"date": time.strftime("%Y-%m-%d"), "arch": platform.machine(), "cpus": os.cpu_count()},
       "english_fraction": rows}
json.dump(out, open("benchmarks/results/cpu_demo_replay_fraction.json", "w"), indent=1, ensure_ascii=False)
print(json.dumps(out, indent=1, ensure_ascii=False))
PY
