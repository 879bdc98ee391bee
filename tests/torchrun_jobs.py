"""Several `langclip` command lines, one after another, in each process of one torchrun launch: the
tests that compare a torchrun job with one process share the launch (each process imports torch and
open_clip once, ~10 s of a core, instead of once per job). Usage, JOBS a JSON list of argument lists:

    python -m torch.distributed.run --nproc_per_node 2 tests/torchrun_jobs.py JOBS.json

The process group is started here, once, and ended after the last job: a job then leaves it alone
(langclip ends only a group it started). A second group started in the same torchrun process would
read the first one's addresses from torchrun's store and fail to connect. The first job to fail ends
the launch with its exit status."""
import json
import sys

import torch.distributed as dist

from langclip.cli import main

if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        for args in json.loads(open(sys.argv[1], encoding="utf-8").read()):
            print("job:", " ".join(args), flush=True)
            rc = main(args)
            if rc:
                sys.exit(rc)
        dist.barrier()
    finally:
        dist.destroy_process_group()
