"""`langclip train` that kills itself with SIGKILL right after step N (a real, deterministic crash
mid-epoch, for the resume test): python tests/fault_train.py N train --config ... ; with N:TERM or N:INT
it sends itself that signal instead (a preemption, a Ctrl-C). The fault lives here, in the tests, not in
the library."""
import os
import signal
import sys

import langclip.train.loop as loop
from langclip.cli import main

at, _, name = sys.argv[1].partition(":")
at, sig = int(at), getattr(signal, f"SIG{name or 'KILL'}")
original = loop.after_step


def after_step(run, loss, parts):
    original(run, loss, parts)
    if run.step == at:
        os.kill(os.getpid(), sig)


loop.after_step = after_step
sys.exit(main(sys.argv[2:]))
