"""A window of steps under torch.profiler, for train_loop.py's `--profile DIR`: where the whole loop's
time goes against the bare step's, per step — device time by kernel, host time by operator, the number
of operators and kernels a step launches, the wall time a step takes, and (on CUDA) every operation that
makes the host wait for the device (`torch.cuda.set_sync_debug_mode`), with the line that asked for it.

    prof = StepProfiler("cuda", start=60, steps=20, out=Path("prof"), name="loop_bf16-weights")
    for ...: step(); prof.tick()
    print(json.dumps(prof.summary()))       # also writes prof/loop_bf16-weights.txt (the tables)
"""
import statistics
import time
import traceback
import warnings
from pathlib import Path

import torch


class StepProfiler:
    def __init__(self, device: str, start: int, steps: int, out: Path, name: str):
        from torch.profiler import ProfilerActivity, profile, schedule

        self.cuda = device == "cuda"
        self.start, self.steps, self.out, self.name = start, steps, Path(out), name
        self.out.mkdir(parents=True, exist_ok=True)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=acts, schedule=schedule(wait=max(0, start - 2), warmup=min(2, start), active=steps,
                                                               repeat=1), on_trace_ready=self._ready, record_shapes=False)
        self.prof.__enter__()
        self.n, self.times, self.syncs, self.result = 0, [], {}, None
        self._warn = None

    def tick(self) -> None:
        """After each step."""
        self.n += 1
        if self.start <= self.n <= self.start + self.steps:
            self.times.append(time.perf_counter())
        if self.n == self.start and self.cuda:      # the window opens: report every host-device sync
            self._warn = warnings.catch_warnings(record=True)
            self._records = self._warn.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            self._showwarning, warnings.showwarning = warnings.showwarning, self._where
        if self.n == self.start + self.steps and self._warn is not None:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = self._showwarning
            self._warn.__exit__(None, None, None)
            self._warn = None
        self.prof.step()
        if self.n == self.start + self.steps:
            self.prof.__exit__(None, None, None)

    def _where(self, message, category, filename, lineno, file=None, line=None):
        where = [f"{f.filename.split('/src/')[-1].split('/site-packages/')[-1]}:{f.lineno} {f.name}"
                 for f in traceback.extract_stack()[:-2] if "warnings" not in f.filename][-3:]
        key = f"{str(message)[:80]} <- {' <- '.join(reversed(where))}"
        self.syncs[key] = self.syncs.get(key, 0) + 1

    def _ready(self, prof) -> None:
        ka = prof.key_averages()
        dev = "self_device_time_total" if hasattr(ka[0], "self_device_time_total") else "self_cuda_time_total"
        sort = dev if self.cuda else "self_cpu_time_total"
        (self.out / f"{self.name}.txt").write_text(ka.table(sort_by=sort, row_limit=45), encoding="utf-8")
        ops = [e for e in ka if e.key.startswith("aten::")]
        kernels = [e for e in ka if getattr(e, dev, 0) > 0 and not e.key.startswith(("aten::", "cuda", "Torch-Compiled",
                                                                                     "CompiledFunction"))]
        self.result = {
            "aten_ops_per_step": round(sum(e.count for e in ops) / self.steps, 1),
            "host_ms_per_step_self": round(sum(e.self_cpu_time_total for e in ka) / self.steps / 1e3, 2),
            "device_ms_per_step": round(sum(getattr(e, dev) for e in kernels) / self.steps / 1e3, 2) if self.cuda else None,
            "kernels_per_step": round(sum(e.count for e in kernels) / self.steps, 1) if self.cuda else None,
            "top_device": [(e.key[:60], round(getattr(e, dev) / self.steps / 1e3, 3))
                           for e in sorted(kernels, key=lambda e: -getattr(e, dev))[:8]] if self.cuda else None,
            "top_host": [(e.key[:60], round(e.self_cpu_time_total / self.steps / 1e3, 3))
                         for e in sorted(ka, key=lambda e: -e.self_cpu_time_total)[:8]],
        }

    def summary(self) -> dict:
        if self.n < self.start + self.steps:
            self.prof.__exit__(None, None, None)
        walls = [b - a for a, b in zip(self.times, self.times[1:])]
        return {"name": f"profile_{self.name}", "steps": [self.start, self.start + self.steps],
                "wall_ms_per_step_median": round(statistics.median(walls) * 1e3, 2) if walls else None,
                **(self.result or {"error": f"the window was not reached ({self.n} steps)"}),
                "syncs": (sorted(self.syncs.items(), key=lambda kv: -kv[1])[:10] if self.cuda else None),
                "table": str(self.out / f"{self.name}.txt")}
