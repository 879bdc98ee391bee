"""`langclip search --images photos/ --model runs/ru "…"`: search a folder as rclip does, without building an
index first. The index lives in one place for these pictures and this image tower
($LANGCLIP_INDEX_HOME, default ~/.cache/langclip/indexes/<key>; nothing is written beside the photos), is
built on the first search and brought up to date (`index update`: new and changed pictures embedded,
deleted ones dropped) on each later one unless told not to. Any run trained on the same image tower finds
the same index, and so does the CLIP weights file they were trained from: the key is the pictures' folders
and the tower's tensor digest.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

from ..files import read_json_dict

HOME_ENV = "LANGCLIP_INDEX_HOME"
DIGESTS = "tower_digests.json"   # in the index home: CLIP weights files' tower digests (clip_file_digest)


def index_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "langclip" / "indexes").expanduser()


def tower_key(model: str | Path, home: str | Path | None = None) -> str:
    """What identifies the image tower `model` embeds pictures with: a run's or export's recorded tensor
    digest (the file's SHA-256 for runs from before it), read without loading it; for CLIP's own weights
    file the same tensor digest, computed once for each version of the file (its path, size and mtime,
    remembered in the index home). So a run and the CLIP file it was trained from share a folder's index,
    and a CLIP file moved or copied elsewhere finds its index again."""
    from ..inference import image_tower_ref, model_meta

    p = Path(model).expanduser()
    if p.is_dir():
        ref = image_tower_ref(model_meta(p))
        key = ref.get("tower_sha256") or ref.get("sha256")
        if not key:
            raise ValueError(f"{model}: records no image tower (not made by langclip?); build an index with "
                             f"`langclip index build` and search it with --index")
        return key
    if p.is_file():
        return clip_file_digest(p, home)
    raise FileNotFoundError(f"model not found: {model} (a langclip run or export folder, or a CLIP weights file)")


def clip_file_digest(path: Path, home: str | Path | None = None) -> str:
    """A CLIP weights file's image-tower digest (weights.tower_digest), remembered in
    <index home>/tower_digests.json by the file's resolved path, size and mtime: a file read once per version."""
    from ..weights import load_state_dict, split_towers, tower_digest

    st, where = path.stat(), str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns]
    memo_file = Path(home or index_home()) / DIGESTS
    memo = read_json_dict(memo_file)   # damaged: {}, rebuilt as digests are computed
    if isinstance(memo.get(where), dict) and memo[where].get("stamp") == stamp and memo[where].get("tower_sha256"):
        return memo[where]["tower_sha256"]
    vis = split_towers(load_state_dict(path))[0]
    if not vis:
        raise ValueError(f"{path}: no image tower in it ('visual.*' weights), so it cannot embed pictures")
    digest = tower_digest(vis)
    memo[where] = {"stamp": stamp, "tower_sha256": digest}
    _write_memo(memo_file, memo)
    return digest


def _write_memo(memo_file: Path, memo: dict) -> None:
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_file.with_name(f"{memo_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=1), encoding="utf-8")
    os.replace(tmp, memo_file)   # two searches at once: each writes a whole file, the last one stays


def _old_file_key(p: Path) -> str:
    """The key a CLIP weights file had before session 30 (path, size, mtime): its index is moved, not rebuilt."""
    st = p.stat()
    return f"file:{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def index_for(index: str | None, images: list[str] | None, model, arch: str = "", weights: str | None = None,
              device: str | None = None, update: bool = True) -> str:
    """What `search` and `serve` answer from: `--index` as given, or the kept index of `--images` (built or
    updated first, with `model`'s image tower); exactly one of the two."""
    one_source(index, images)
    return index or str(folder_index(images, model, arch, weights, device, update))


def one_source(index: str | None, images: list[str] | None) -> None:
    if bool(index) == bool(images):
        raise ValueError("give --index (an index built with `langclip index build`) or --images (pictures: "
                         "their index is kept for you), one of them")


def folder_index(data: list[str], model: str | Path, arch: str = "", weights: str | None = None,
                 device: str | None = None, update: bool = True, home: str | Path | None = None) -> Path:
    """The index of the pictures under `data` (folders, tables or shards) for `model`'s image tower: built
    the first time (with progress on stderr), updated later (`update`), its folder returned. What the build
    and the update print goes to stderr, so a search's standard output holds its results alone."""
    for d in data:
        if not Path(d).expanduser().exists():
            raise FileNotFoundError(f"--images: not found: {d}")
    paths = sorted(str(Path(d).expanduser().resolve()) for d in data)
    key = _key(paths, tower_key(model, home))
    out = Path(home or index_home()) / key
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.parent / f"{key}.lock"):   # two searches at once: the second waits, then finds it built
        p = Path(model).expanduser()
        old = out.parent / _key(paths, _old_file_key(p)) if p.is_file() else None
        if old is not None and not out.exists() and (old / "manifest.json").is_file():
            os.replace(old, out)
            (out.parent / f"{old.name}.lock").unlink(missing_ok=True)
        return _build_or_update(out, paths, model, arch, weights, device, update)


def _key(paths: list[str], tower: str) -> str:
    return hashlib.sha256(json.dumps({"data": paths, "tower": tower}).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:      # not POSIX: no lock
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build_or_update(out: Path, paths: list[str], model, arch: str, weights, device, update: bool) -> Path:
    from ..config import IndexConfig
    from .index import build_index, update_index

    p = Path(model).expanduser()   # this search's model embeds (its tower is the index's: the key says so)
    tower = ({"model": str(p.resolve()), "weights": weights or "", "clip": ""} if p.is_dir() else
             {"model": "", "clip": arch, "weights": str(p.resolve())})
    if (out / "manifest.json").is_file():
        if update:
            import io

            from ..folders import LEFT_OUT_SAID, Unreachable

            said = LEFT_OUT_SAID.set(True)   # the folders left out: named when the index was built
            try:
                with contextlib.redirect_stdout(io.StringIO()):   # its JSON line: said below in words, if at all
                    r = update_index(out, progress=True, **tower, **({"device": device} if device else {}))
            except Unreachable as e:   # a NAS not mounted: its pictures are searched as they were indexed
                print(f"langclip: {e}; searching the index as it is", file=sys.stderr, flush=True)
                return out
            finally:
                LEFT_OUT_SAID.reset(said)
            if r.get("embedded") or r.get("removed") or r.get("changed") or r.get("failed"):
                print(f"langclip: {out}: {r['added']} new, {r['changed']} changed, {r['removed']} removed, "
                      f"{r['failed']} unreadable; {r['count']:,} pictures", file=sys.stderr, flush=True)
        return out
    with contextlib.redirect_stdout(sys.stderr):
        print(f"langclip: indexing {', '.join(paths)} once into {out} (later searches add only new and "
              f"changed pictures)", flush=True)
        build_index(IndexConfig(data=paths, out=str(out), device=device, **tower))
    return out


def list_indexes(home: str | Path | None = None) -> list[dict]:
    """The indexes `search --images` keeps: {path, data, gone (those of its folders that no longer exist),
    pictures, mib, updated}, most recently updated first."""
    root = Path(home or index_home())
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        f = d / "manifest.json"
        if not f.is_file():
            continue
        try:
            man = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data = list(man.get("data") or [])
        size = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
        out.append({"path": str(d), "data": data, "gone": [x for x in data if not Path(x).exists()],
                    "pictures": man.get("count", 0), "mib": round(size / 2**20, 1),
                    "updated": man.get("updated") or man.get("built") or ""})
    return sorted(out, key=lambda r: r["updated"], reverse=True)


def prune_indexes(home: str | Path | None = None) -> list[dict]:
    """Delete the kept indexes none of whose pictures' folders exist any more, and the remembered digests
    of CLIP files that are gone; -> the indexes deleted."""
    import shutil

    gone = [r for r in list_indexes(home) if r["data"] and len(r["gone"]) == len(r["data"])]
    for r in gone:
        shutil.rmtree(r["path"])
        Path(r["path"] + ".lock").unlink(missing_ok=True)
    memo_file = Path(home or index_home()) / DIGESTS   # the digests of CLIP files that no longer exist go too
    memo = read_json_dict(memo_file)
    left = {k: v for k, v in memo.items() if Path(k).is_file()}
    if memo and not left:
        memo_file.unlink()
    elif len(left) < len(memo):
        _write_memo(memo_file, left)
    return gone
