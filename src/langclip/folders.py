"""What a folder holds, in the terms a later command needs: a build that was interrupted (`unfinished_cache`),
the architecture a run, cache or index records (`pin_arch`), and a photo folder's pictures (`files_under`).
Light: the configurations import it."""
from __future__ import annotations

import contextvars
from pathlib import Path


def pin_arch(arch: str) -> str:
    """A --clip value as a run, cache or index records it: a model-config JSON file or a transformers folder as
    its absolute path, so that later commands find it from any folder; a registered name unchanged."""
    if arch and ((arch.endswith(".json") and Path(arch).is_file()) or Path(arch).is_dir()):
        return str(Path(arch).resolve())
    return arch


def unfinished_cache(path: str | Path) -> str | None:
    """What an interrupted `cache build` left in `path` (its emb/build.json, no manifest yet), or an interrupted
    `index build` (the cache in its work/), in words for an error; None for anything else."""
    import json
    import math

    p = Path(path)
    if not (p / "manifest.json").is_file() and (p / "work" / "emb" / "build.json").is_file():   # an index's
        why = unfinished_cache(p / "work")
        return why and why.replace("cache build", "index build").replace(f"--out {p / 'work'}", f"--out {p}")
    f = p / "emb" / "build.json"
    if (p / "manifest.json").is_file() or not f.is_file():
        return None
    b: dict = {}
    try:
        b = json.loads(f.read_text(encoding="utf-8"))
        total = math.ceil(int(b["images"]) / int(b["shard_size"]))
    except (ValueError, KeyError, TypeError, ZeroDivisionError):   # a build.json cut short: still unfinished
        total = "?"
    done = len(list((p / "emb").glob("shard_*.safetensors")))
    what = "text-only build" if isinstance(b, dict) and b.get("text_only") else "cache build"
    return (f"an unfinished {what} ({done} of {total} embedding shards written; no manifest.json yet): rerun the "
            f"same `langclip cache build` with --out {p} to finish it (it resumes)")


# folders a photo collection holds besides its pictures, not searched by default (as rclip leaves out @eaDir,
# node_modules and .git): hidden ones (.git, .thumbnails, .Trash-1000, QNAP's .@__thumb), Synology's thumbnails
# (@eaDir: several small copies of every photo), recycle bin and snapshots (every photo again), Windows' recycle
# bin and volume information, the debris of a zip made on macOS, a project's dependencies
SKIPPED_FOLDERS = (".*", "@eaDir", "#recycle", "#snapshot", "$RECYCLE.BIN", "System Volume Information", "__MACOSX",
                   "node_modules")


# a macOS Photos (or iPhoto) library is a folder holding the photos as imported beside the app's resized copies,
# edit renders, shared albums' files and caches (resources/derivatives, renders, ...): each photo several times
# over. Where folders are skipped, only its originals are entered.
PHOTOS_LIBRARY, LIBRARY_ORIGINALS = (".photoslibrary", ".photolibrary"), ("originals", "Masters")


def skipped_folder(name: str, skip=SKIPPED_FOLDERS) -> bool:
    """A folder named `name` is one of those `skip` names (fnmatch patterns, case-sensitive): not entered."""
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pat) for pat in skip)


def walk(folder: str | Path, skip=(), left: list | None = None, unread: list | None = None):
    """(folder, its file names) for `folder` and every folder under it, depth first in name order as os.walk gives
    them, but entering a folder that is a symbolic link too (a photo folder's `phone -> /mnt/nas/phone`, a dataset's
    folders linked from a store: os.walk leaves them, and Python's rglob, silently): each real folder once, so a
    link that loops, or leads where the walk goes anyway (into `folder`) or above it, is not entered. A folder
    named as in `skip` (skipped_folder) is not entered and is added to `left`, as is, where `skip` is not empty, any
    of a macOS Photos library's but its originals (PHOTOS_LIBRARY); an error listing one, and a broken link (a NAS
    not mounted), to `unread` (OSError with the path as its filename)."""
    import errno
    import os

    left, unread = (left if left is not None else []), (unread if unread is not None else [])
    top = os.path.realpath(folder)
    try:
        st = os.stat(folder)
    except OSError as e:
        unread.append(e)
        return
    seen, stack = {(st.st_dev, st.st_ino)}, [os.fspath(folder)]
    while stack:
        root = stack.pop()
        try:
            with os.scandir(root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            unread.append(e)
            continue
        files, dirs = [], []
        library = bool(skip) and os.path.basename(root).lower().endswith(PHOTOS_LIBRARY)
        for e in entries:
            if not _is_dir(e):
                if e.is_symlink() and not os.path.exists(e.path):   # only a link pays for this look
                    unread.append(OSError(errno.ENOENT, f"a broken link to {os.readlink(e.path)}", e.path))
                else:
                    files.append(e.name)
            elif skipped_folder(e.name, skip) or library and e.name not in LIBRARY_ORIGINALS:
                left.append(e.path)
            else:
                try:
                    st = e.stat()   # a link's target's (the identity of the folder it leads to)
                except OSError as err:
                    unread.append(err)
                    continue
                if (st.st_dev, st.st_ino) in seen:   # a loop, or a folder reached through another link
                    continue
                if not e.is_symlink() or not _nested(os.path.realpath(e.path), top):
                    seen.add((st.st_dev, st.st_ino))   # (a link into `folder` or above it: its pictures where they are)
                    dirs.append(e.path)
        yield root, files
        stack += reversed(dirs)


def _is_dir(entry) -> bool:
    try:
        return entry.is_dir()   # a link to a folder too
    except OSError:
        return False


def _nested(a: str, b: str) -> bool:
    """One of two real paths lies in the other (or they are one)."""
    import os

    try:
        return os.path.commonpath([a, b]) in (a, b)
    except ValueError:   # on two drives
        return False


# `search --images` lists its folder at every search: the folders left out are named the first time (the build), not
# at each search after (the update)
LEFT_OUT_SAID = contextvars.ContextVar("LEFT_OUT_SAID", default=False)


def files_under(folder: str | Path, exts: tuple[str, ...], skip=SKIPPED_FOLDERS, problems: list | None = None) -> list[str]:
    """The files under `folder` whose extension is one of `exts` (lower case), sorted. A folder whose name
    matches a pattern of `skip` (fnmatch, case-sensitive) is not entered (`folder` itself always is) and is
    named on stderr, as is one that cannot be listed; macOS's AppleDouble files ("._IMG_1.jpg", a picture's
    metadata on a disk of another system) are not pictures; a RAW photo beside a picture of its name is left to
    it; a file whose path is not UTF-8 is left out as a problem (`problems`) with what to do. Paths as strings:
    a million files stay cheap."""
    import os
    import sys

    from .files import progress_bar

    found, left, unread = [], [], []
    # a NAS share of 500,000 photos over SMB lists for minutes: a count shows after 2 s
    with progress_bar(desc=f"listing {shown_path(str(folder))}", unit=" pictures", delay=2, leave=False) as bar:
        for root, files in walk(folder, skip, left, unread):   # a folder it may not list: named below
            found += [os.path.join(root, f) for f in files if os.path.splitext(f)[1].lower() in exts and not f.startswith("._")]
            bar.n = len(found)
            bar.update(0)
    if left and not LEFT_OUT_SAID.get():
        print(f"{folder}: {len(left)} folder{'s' * (len(left) > 1)} left out ({', '.join(map(shown_path, sorted(left)[:3]))}"
              f"{', …' * (len(left) > 3)}): hidden, thumbnails, recycle bins, a Photos library's copies (exclude=[] takes "
              f"them)", file=sys.stderr)
    for e in unread:
        print(f"{shown_path(str(e.filename))}: not read ({e.strerror}); its pictures are left out", file=sys.stderr)
        if problems is not None:   # `index update` keeps what it indexed there (unreachable)
            problems.append({"where": shown_path(str(e.filename)), "reason": f"not read ({e.strerror})", "folder": True})
    found = _raw_left_to_pictures(found)
    bad = [f for f in found if not is_text(f)]
    if bad and problems is not None:
        problems += [{"where": shown_path(f), "reason": NOT_UTF8} for f in bad]
    return sorted(set(found) - set(bad)) if bad else sorted(found)


def _raw_left_to_pictures(found: list[str]) -> list[str]:
    """`found` less the RAW photos that lie beside a picture of the same name ("IMG_1.CR2" and "IMG_1.JPG": a
    camera writing both; the JPEG is the photo as its owner sees it, as rclip chooses)."""
    import os

    from .pixels import RAW_EXTS

    raws = [f for f in found if os.path.splitext(f)[1].lower() in RAW_EXTS]
    if not raws:
        return found
    seen = {os.path.splitext(f)[0].lower() for f in found if os.path.splitext(f)[1].lower() not in RAW_EXTS}
    drop = {f for f in raws if os.path.splitext(f)[0].lower() in seen}
    return [f for f in found if f not in drop] if drop else found


NOT_UTF8 = ("its name is not UTF-8 (an older system's encoding, e.g. cp1251), which the index's tables and pages "
            "cannot hold: rename it, e.g. `convmv -r -f cp1251 -t utf-8 --notest FOLDER`")


def is_text(name: str) -> bool:
    """`name` (a path as Python reads it from the disk) is UTF-8 text: it holds none of the lone surrogates
    that stand for the bytes of a name in another encoding."""
    if name.isascii():
        return True
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown_path(name: str) -> str:
    """A path as text, its bytes that are not UTF-8 written as \\xNN ("\\xea\\xee\\xf2.jpg")."""
    import os

    return name if is_text(name) else os.fsencode(name).decode("utf-8", "backslashreplace")


def last_metrics(run: str | Path) -> tuple[dict, dict]:
    """(the last held-out validation row, the last zero-shot row) of a run's metrics.jsonl; {} where none (a
    line cut short by a crash is passed over)."""
    import json

    val, zs = {}, {}
    f = Path(run) / "metrics.jsonl"
    for line in f.read_text(encoding="utf-8", errors="replace").splitlines() if f.is_file() else ():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "val/mean_recall" in row:
            val = row
        if isinstance(row, dict) and any(k.startswith("zeroshot/") for k in row):
            zs = row
    return val, zs


class Unreachable(ValueError):
    """An update would drop pictures it could not see (a NAS not mounted): nothing was changed."""


def unreachable(problems: list[dict], listed: set[str], known: list[str], data: list[str]) -> list[tuple[str, int, str]]:
    """Where an update could not look that an index holds pictures in, as (folder, pictures, why): a folder that
    could not be listed or a broken link (`problems` from files_under), or a data folder that holds no picture
    now (a mount point with nothing mounted). Those pictures are missing from `listed`, not deleted."""
    import os

    gone = [k for k in known if k not in listed]
    if not gone:
        return []
    places = [(x["where"], x["reason"]) for x in problems if x.get("folder")]
    for d in data:
        d = str(Path(d).expanduser())
        if Path(d).is_dir() and not any(k.startswith(d.rstrip(os.sep) + os.sep) for k in listed):
            places.append((d, "no picture in it now (a mount point with nothing mounted?)"))
    out = []
    for where, why in places:
        n = sum(k.startswith(where.rstrip(os.sep) + os.sep) for k in gone)
        if n:
            out.append((where, n, why))
    return out
