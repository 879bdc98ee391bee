"""Small shared helpers for what every stage writes and shows: progress bars that stay readable in a
log, and the rule that a command never writes into a folder or onto a file that is not its own."""
from __future__ import annotations

import sys
from pathlib import Path

LOG_INTERVAL_S = 30.0   # progress updates in a log file (no terminal): one per this many seconds


def progress_bar(*args, **kwargs):
    """tqdm, but in a non-terminal (a log file, CI) it writes an update every LOG_INTERVAL_S seconds
    instead of several a second (a 2-minute demo's log held thousands of updates)."""
    from tqdm import tqdm

    stream = kwargs.get("file") or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(*args, **kwargs)
    kwargs["mininterval"] = max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL_S)
    kwargs["maxinterval"] = max(float(kwargs.get("maxinterval", 10.0)), kwargs["mininterval"])
    kwargs.setdefault("ncols", 100)
    return _log_bar_class()(*args, **kwargs)


def _log_bar_class():
    from tqdm import tqdm

    class LogBar(tqdm):
        """In a log each drawing of the bar is a line of its own, and a message is just a line: no
        carriage returns, no clearing and redrawing of the bar around it."""

        def display(self, msg=None, pos=None):
            text = self.__str__() if msg is None else msg
            if text:   # tqdm clears with an empty message: nothing to clear in a log
                self.fp.write(text + "\n")
                self.fp.flush()
            return True

        @classmethod
        def write(cls, s, file=None, end="\n", nolock=False):
            fp = file if file is not None else sys.stderr
            fp.write(s + end)
            fp.flush()

    return LogBar


class OutputError(ValueError):
    """A command was asked to write where it must not (a foreign folder, a file)."""


def check_out_dir(path: str | Path, what: str, markers: tuple[str, ...]) -> Path:
    """`path` may be written as a `what` folder: missing, empty, or already one (holds a marker file).
    A file there, or a non-empty folder of something else, is refused: nothing of the user's is mixed
    into or overwritten."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(f"{p}: is a file; the output must be a folder ({what}). Give another --out")
    if p.is_dir() and any(p.iterdir()) and not any((p / m).exists() for m in markers):
        shown = ", ".join(sorted(x.name for x in p.iterdir())[:5])
        raise OutputError(f"{p}: a non-empty folder that is not a langclip {what} folder (holds {shown}…); "
                          f"refusing to write into it. Give a new or empty --out")
    return p


def check_out_file(path: str | Path, what: str, ours) -> Path:
    """`path` may be written as a `what` file: missing, or written by langclip before (`ours(path)`)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"{p}: is a folder; expected a file path for the {what}")
    if p.exists() and not ours(p):
        raise OutputError(f"{p}: exists and was not written by langclip; refusing to overwrite it. "
                          f"Give another --out")
    return p
