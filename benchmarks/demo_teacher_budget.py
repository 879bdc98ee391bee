"""The demo teacher on a smaller budget: `langclip demo --size small`'s world (seed 0, 400 test pictures),
its English teacher trained for EPOCHS at peak learning rate LR (OneCycle, as the demo does) on N_TRAIN
pictures, then its zero-shot acc@1 on the test pictures. The demo's own small teacher (1200, 35, 2e-3)
reaches shape 0.6425 (cpu_demo_bf16_logits.json). Session 22 asked whether a cheaper teacher could make
the suite's demo fixture shorter; one thread each:

    for a in "1200 20 4e-3" "1200 15 6e-3" "800 30 3e-3"; do
        OMP_NUM_THREADS=1 python benchmarks/demo_teacher_budget.py $a 2>/dev/null | grep n_train
    done > benchmarks/results/cpu_demo_teacher_budget.jsonl
"""
import sys, time, json, torch
from pathlib import Path
torch.set_num_threads(1)
import langclip.demo.run as r
from langclip.demo.world import sample_scenes
from langclip.model import LangCLIP, model_config, image_transform
from langclip.tokenizer import Tokenizer
from langclip.weights import load_state_dict
from PIL import Image
n_train, epochs, lr = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
d = Path(f"/tmp/tp_{n_train}_{epochs}_{lr}")
orig = torch.optim.AdamW
torch.optim.AdamW = lambda p, lr_=None, **k: orig(p, **{**k, "lr": lr})
orig_oc = torch.optim.lr_scheduler.OneCycleLR
torch.optim.lr_scheduler.OneCycleLR = lambda opt, max_lr, **k: orig_oc(opt, max_lr=lr, **k)
rows = r._write_world(d / "train", sample_scenes(n_train, 0), 0)
test_rows = r._write_world(d / "test", sample_scenes(400, 1), 1)
t0 = time.perf_counter()
w = r._train_teacher(rows, d / "train", d / "teacher", epochs, 0, 0.0)
dt = time.perf_counter() - t0
teacher = LangCLIP.empty(model_config(str(d / "teacher" / "demo-clip.json")))
teacher.clip.load_state_dict(load_state_dict(w)); teacher.image_ready = True; teacher.eval()
tf = image_transform({"size": 64})
imgs = sorted({x["image"] for x in test_rows}); first = {}
for x in test_rows: first.setdefault(x["image"], x)
X = torch.stack([tf(Image.open(d / "test" / n)) for n in imgs])
labels = {k: [first[n][k] for n in imgs] for k in ("shape", "colour", "count")}
with torch.no_grad(): feats = teacher.encode_image(X)
res = r._zero_shot(teacher, Tokenizer.clip(), feats, labels, "en")
print(json.dumps({"n_train": n_train, "epochs": epochs, "lr": lr, "teacher_s": round(dt, 1), **{t: round(v["acc1"], 3) for t, v in res.items()}}), flush=True)
