"""Several `langclip` command lines, one after another, in each process of one torchrun launch: the
tests that compare a torchrun job with one process share the launch (each process imports torch and
open_clip once, ~10 s of a core, instead of once per job). Usage, JOBS a JSON list of argument lists:

    python -m torch.distributed.run --nproc_per_node 2 tests/torchrun_jobs.py JOBS.json

The first job starts the process group and the later ones run in it (it ends when the process exits:
langclip/dist.py), as in a user's script that calls `train()` twice under torchrun; ending it after
each job once made the second job fail to connect. The first job to fail ends the launch with its
exit status."""
import json
import sys

from langclip.cli import main

if __name__ == "__main__":
    for args in json.loads(open(sys.argv[1], encoding="utf-8").read()):
        print("job:", " ".join(args), flush=True)
        rc = main(args)
        if rc:
            sys.exit(rc)
