"""Ctrl-C or SIGTERM (a cluster preempting the job, `kill`, a notebook's interrupt) stops a training run between
two steps with a checkpoint at the step it stopped at, so `--resume latest` loses nothing; before, the run
ended where the signal found it and kept only its last periodic checkpoint (an epoch's work at the origin's
scale). A second Ctrl-C stops at once. One process checks after every step; under torchrun the ranks agree
at log steps (one small all-reduce there), since each must stop after the same step."""
from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The run stopped on a signal after saving a checkpoint; `code` is the shell's exit status for it."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class StopRequest:
    """While active (a `with` block in the main thread), SIGINT and SIGTERM ask the loop to stop instead of
    interrupting it; the previous handlers come back afterwards. A signal the process ignores (SIGINT in a
    shell's background job) stays ignored."""

    def __init__(self):
        self.signum = 0
        self._old: dict = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt   # asked twice: now
        self.signum = signum

    def agreed(self, world: int, device, at_sync: bool) -> int:
        """The signal to stop on now (0: go on): this process's, or under torchrun any rank's at a log step."""
        if world == 1:
            return self.signum
        if not at_sync:
            return 0
        import torch
        import torch.distributed as dist

        t = torch.tensor([self.signum], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    @staticmethod
    def name(signum: int) -> str:
        return signal.Signals(signum).name


def exit_code(signum: int) -> int:
    """128 + the signal's number, as a shell reports a process that a signal ended (130: Ctrl-C)."""
    return 128 + int(signum)
