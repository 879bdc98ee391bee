"""libjpeg's warnings, caught per picture instead of flooding the log.

libjpeg-turbo (inside TorchCodec's and torchvision's `decode_jpeg`) decodes many damaged JPEGs anyway
and prints a warning for each straight to the process's standard error ("Corrupt JPEG data: 3
extraneous bytes before marker 0xd9", "Premature end of JPEG file"); PIL's decoder is silent. Over a
crawl or a photo library with a few thousand such files the log fills with lines that name no file.
`quiet_libjpeg` runs one decode with file descriptor 2 pointed at an in-memory file, hands back libjpeg's
lines for that picture (the caller counts them and names the file), and writes anything else that
arrived meanwhile (a Python warning, another library's message) to the real standard error, in order.

Use it where one thread decodes at a time (a DataLoader worker, or the main thread of a build without
workers): file descriptors belong to the whole process, so a line another thread writes while a
picture decodes is delayed until the decode ends (not lost).
"""
from __future__ import annotations

import os
import re
import sys
import tempfile

# libjpeg(-turbo)'s warning texts (jerror.h, JWRN_*), as its default output_message prints them
LIBJPEG_LINE = re.compile(
    r"^(Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters for sequential JPEG|"
    r"Inconsistent progression sequence|Unknown Adobe color transform code|Warning: unknown JFIF revision|"
    r"Warning: thumbnail image size|Application transferred too many scanlines|JFIF extension marker)")

_sink = {"pid": None, "fd": None, "file": None}


def _sink_fd() -> int:
    """This process's in-memory file (made again after a fork: a child must not share the offset)."""
    if _sink["pid"] != os.getpid():
        if hasattr(os, "memfd_create"):
            _sink.update(fd=os.memfd_create("langclip-libjpeg"), file=None)
        else:   # not Linux
            f = tempfile.TemporaryFile()
            _sink.update(fd=f.fileno(), file=f)
        _sink["pid"] = os.getpid()
    return _sink["fd"]


def _drain(fd: int) -> str:
    n = os.lseek(fd, 0, os.SEEK_CUR)
    if not n:
        return ""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks, left = [], n
    while left:
        b = os.read(fd, left)
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return b"".join(chunks).decode("utf-8", "replace")


def quiet_libjpeg(fn, *args, **kwargs):
    """(fn(*args, **kwargs), [libjpeg's warning lines]) with those lines kept off standard error.
    Exceptions propagate (after the other lines are written out)."""
    sink = _sink_fd()
    for s in (sys.stdout, sys.stderr):
        if s is not None:
            s.flush()
    saved = os.dup(2)
    os.dup2(sink, 2)
    text = ""
    try:
        out = fn(*args, **kwargs)
    finally:
        if sys.stderr is not None:
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        text = _drain(sink)
        other = "".join(line for line in text.splitlines(keepends=True) if not LIBJPEG_LINE.match(line))
        if other:
            os.write(2, other.encode("utf-8"))
    return out, [line.strip() for line in text.splitlines() if LIBJPEG_LINE.match(line)]
