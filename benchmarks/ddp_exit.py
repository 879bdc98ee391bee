"""How often a torchrun launch of tests/ddp_worker.py (2 gloo ranks on CPU, DDP steps for every loss
combination) fails, with this tree's langclip vs an older revision's (a `git worktree` of it). Before
session 30, DDP's import of torch.distributed.nn after the group started pinned the group (its functions'
`group=group.WORLD` defaults), so destroy_process_group left gloo's worker threads running into the
interpreter's exit, where one that released a finished collective's tensors aborted the rank ("terminate
called without an active exception", exit -6) in a few launches of a hundred: CI failed on it once.

The launches alternate between the two trees, so both see the same machine load. Each line: the revision,
its launches, failures, their exit codes, and the first failure's last stderr line.

    python benchmarks/ddp_exit.py --launches 100 --old 939ab6b > benchmarks/results/cpu_ddp_exit.jsonl
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def launch(tree: Path, port: int, out: Path) -> subprocess.CompletedProcess:
    """One torchrun launch of TREE's tests/ddp_worker.py with TREE's langclip first on the path."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tree / 'src'}{os.pathsep}{tree / 'tests'}")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), str(tree / "tests" / "ddp_worker.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", type=int, default=100, help="launches per tree")
    ap.add_argument("--old", default="939ab6b", help="the revision to compare with")
    ap.add_argument("--port", type=int, default=29651)
    a = ap.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old), a.old], check=True)
        try:
            trees = {f"{a.old} (before)": old, f"{rev}+tree (this)": ROOT}
            stats = {k: {"launches": 0, "failures": 0, "exit_codes": [], "first_failure": None} for k in trees}
            for i in range(a.launches):
                for k, tree in trees.items():
                    r = launch(tree, a.port, Path(tmp) / "g.pt")
                    s = stats[k]
                    s["launches"] += 1
                    if r.returncode:
                        s["failures"] += 1
                        s["exit_codes"].append(r.returncode)
                        if s["first_failure"] is None:
                            s["first_failure"] = next((ln for ln in r.stderr.splitlines() if ln.strip()), "")
                print(f"{i + 1}/{a.launches}: " + ", ".join(f"{k} {s['failures']}" for k, s in stats.items()),
                      file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], check=False)
    for k, s in stats.items():
        print(json.dumps({"tree": k, **s, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                          "python": platform.python_version()}))


if __name__ == "__main__":
    main()
