"""The search subcommands (`index build`, `index update`, `search`, `serve`): argument parsing mapped onto
the stage functions of this package; `langclip.cli` adds them to its parser."""
from __future__ import annotations

import json
from pathlib import Path

EPILOGS = {
    "index build": "examples:\n  langclip index build --data photos/ --model runs/ru --out idx/\n"
                   "  langclip index build --data photos/ --clip ViT-B-32-quickgelu --pretrained openai --out idx/\n"
                   "  langclip index build --data cache/ --out idx/      # a langclip cache: nothing embedded again\n"
                   "  langclip index build --data /volume1/photo --model runs/ru --out idx/ --exclude Screenshots\n"
                   "  (folders not entered: hidden ones, @eaDir, #recycle, #snapshot, $RECYCLE.BIN, ...; exclude=[]: "
                   "enter every folder)",
    "index update": "examples:\n  langclip index update idx/        # new and changed pictures embedded, deleted ones dropped\n"
                    "  langclip index update idx/ --drop-unreachable   # and those of a folder it cannot see into now "
                    "(by default\n  such an update changes nothing: a NAS not mounted is not a deletion)",
    "index list": "examples:\n  langclip index list            # the indexes `search --images` keeps, newest first\n"
                  "  langclip index list --prune    # and delete those whose pictures' folders are gone",
    "index tune": "examples:\n  langclip index tune idx/ --model runs/ru        # ~400 shipped class names as queries\n"
                  "  langclip index tune idx/ --model runs/ru --queries queries.txt --target 0.98 -k 20\n"
                  "  langclip index tune idx/ --dry-run                # picture-to-picture queries, nothing stored",
    "search": "examples:\n  langclip search --index idx/ --model runs/ru \"две красные звезды\" -k 12\n"
              "  langclip search --index idx/ --model runs/ru --image q.jpg --json\n"
              "  langclip search --index idx/ --model ViT-B-32.pt \"two red stars\"    # the original CLIP\n"
              "  langclip search --index idx/ --model runs/ru \"красные звёзды\" --as-typed   # no word swapped for a "
              "trained form\n"
              "  langclip search --index idx/ --model runs/ru \"собака\" --add ./pool.jpg --subtract \"2:ночь\"   # "
              "combined, as rclip does\n"
              "  langclip search --index idx/ --model runs/ru \"кот\" -k 5 --paths | xargs -d '\\n' cp -t picked/\n"
              "  langclip search --images ~/Pictures --model runs/ru \"кот на диване\"   # no index build first: kept "
              "and updated for you\n"
              "  langclip search --index idx/ --model runs/ru \"закат над морем\" --preview   # thumbnails in the terminal",
    "serve": "examples:\n  langclip serve --index idx/ --model runs/ru      # http://127.0.0.1:8000/\n"
             "  langclip serve --index idx/ --model runs/ru runs/uk ViT-B-32.pt   # Russian, Ukrainian, English: one index\n"
             "  langclip serve --index idx/ --model runs/ru --host 0.0.0.0 --token-file ~/.langclip-token   # or $LANGCLIP_TOKEN\n"
             "  langclip serve --images ~/Pictures --model runs/ru   # no index build first: kept and updated for you\n"
             "  langclip serve --index idx/ --model runs/ru --root-path /photos   # behind nginx at https://host/photos/ "
             "(docs/deploy.md)",
}


def add_parsers(sub, make) -> None:
    from ..config import IndexConfig

    d = IndexConfig()
    i = sub.add_parser("index", help="a search index of a photo collection")
    isub = i.add_subparsers(dest="icmd", required=True)
    p = make(isub, "index build", "embed every picture once (the image tower is frozen: one index serves every "
                                  "text tower trained on it)", EPILOGS)
    p.add_argument("--data", "--images", dest="data", required=True, nargs="+",
                   help="image folders (recursive), tables, tar shards, or one cache (--images: the same)")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="", help="a langclip run or export: its image tower")
    p.add_argument("--clip", default=d.clip, help="or the CLIP architecture, with --weights or --pretrained")
    p.add_argument("--weights", default="")
    p.add_argument("--pretrained", default="")
    p.add_argument("--image-column")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--device", default=None)
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="a folder name (or pattern, \"tmp*\") not to enter, besides the default (repeatable)")
    p.add_argument("overrides", nargs="*", help="key=value for any IndexConfig field, e.g. ann_threshold=100000")
    p = make(isub, "index update", "add new and changed pictures, drop deleted ones", EPILOGS)
    p.add_argument("index")
    p.add_argument("--data", "--images", dest="data", nargs="+", help="what to index now (default: what it was built from)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--drop-unreachable", action="store_true", help="drop the pictures of a folder it cannot see into "
                   "now (a broken link, a mount point with nothing mounted); by default such an update changes nothing")

    p = make(isub, "index list", "the indexes `search --images` keeps ($LANGCLIP_INDEX_HOME)", EPILOGS)
    p.add_argument("--prune", action="store_true", help="delete those whose pictures' folders no longer exist")
    p = make(isub, "index tune", "measure the approximate search's recall@k on this collection and store the "
                                 "smallest nprobe that reaches a target", EPILOGS)
    p.add_argument("index")
    p.add_argument("--model", help="a langclip run or export (or CLIP weights file): its text tower encodes the queries")
    p.add_argument("--queries", nargs="+", help="your typical searches, or a file with one a line (FILE or @FILE); "
                                                "default: shipped class names in the model's language")
    p.add_argument("--target", type=float, default=0.95, help="recall@k to reach (default 0.95)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--dry-run", action="store_true", help="measure only; keep the index's nprobe")
    p.add_argument("--device", default=None)
    p.add_argument("--weights", help="the CLIP weights file, if it moved since training")

    for name in ("search", "serve"):
        p = make(sub, name, "find pictures by words or by a picture" if name == "search" else
                 "the index over HTTP: an API and a search page", EPILOGS)
        p.add_argument("--index", help="an index (`langclip index build`); or --images")
        p.add_argument("--images", action="append", metavar="FOLDER", help="these pictures (repeatable), as rclip "
                       "searches: their index is built the first time and updated each later time, kept in "
                       "$LANGCLIP_INDEX_HOME (default ~/.cache/langclip/indexes)")
        p.add_argument("--no-update", action="store_true", help="with --images: the index as it is (nothing "
                       "added or dropped since the last time)")
        if name == "search":
            p.add_argument("--model", required=True, help="a langclip run or export, or a CLIP weights file (English)")
        else:
            p.add_argument("--model", required=True, nargs="+", help="a langclip run or export, or a CLIP weights file "
                           "(English); several: their languages over one index, chosen on the page (the first by "
                           "default, and for pictures)")
        p.add_argument("--arch", default="", help="the architecture of a CLIP weights file (default: read from it)")
        p.add_argument("--device", default=None)
        p.add_argument("--weights", help="the CLIP weights file, if it moved since training")
        if name == "search":
            p.add_argument("query", nargs="?", help="what to look for")
            p.add_argument("--image", help="find pictures like this one (with a query: both at once)")
            p.add_argument("--add", "-a", action="append", default=[], metavar="TERM",
                           help="a text or a picture (a file) to look for as well; a weight may lead: 2:собака "
                                "(repeatable)")
            p.add_argument("--subtract", "-s", action="append", default=[], metavar="TERM",
                           help="a text or a picture to look away from, e.g. ночь or 0.5:./night.jpg (repeatable)")
            p.add_argument("-k", type=int, default=10)
            p.add_argument("--json", action="store_true")
            p.add_argument("--paths", action="store_true", help="print the paths alone, one a line (for xargs)")
            p.add_argument("--preview", "-p", action="store_true", help="show each result's thumbnail under it in "
                           "the terminal, as rclip does: the iTerm2 image protocol (iTerm2, WezTerm, Konsole, VS Code), "
                           "or kitty's (kitty, Ghostty)")
            p.add_argument("--preview-height", type=int, default=8, metavar="LINES",
                           help="how many lines of text high each preview is (default 8)")
            p.add_argument("--as-typed", action="store_true", help="search with the query as typed: no word whose "
                           "tokens the run never trained on is replaced by a trained form of it (ru, uk: pymorphy3; ~50 "
                           "more languages: its dictionary form)")
        else:
            p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
            p.add_argument("--port", type=int, default=8000)
            p.add_argument("--token", help="require Authorization: Bearer TOKEN (visible to other users in `ps`: "
                           "prefer --token-file or $LANGCLIP_TOKEN)")
            p.add_argument("--token-file", help="read the token from this file (its first line)")
            p.add_argument("--root-path", default="", metavar="PATH", help="behind a reverse proxy that serves it under "
                           "a path (https://host/photos/ -> /photos): the API's links and /docs carry it; the page "
                           "works under any path without it (docs/deploy.md)")


def run(args, config) -> int:
    from ..config import IndexConfig
    from .index import build_index, update_index

    if args.cmd == "index" and args.icmd == "build":
        cfg = config(IndexConfig, args, dict(data=args.data, out=args.out, model=args.model, clip=args.clip,
                                             weights=args.weights, pretrained=args.pretrained,
                                             image_column=args.image_column, batch_size=args.batch_size,
                                             workers=args.workers, device=args.device,
                                             **({"exclude": IndexConfig().exclude + args.exclude} if args.exclude else {})))
        build_index(cfg)
        return 0
    if args.cmd == "index" and args.icmd == "list":
        from .folder import index_home, list_indexes, prune_indexes

        rows = prune_indexes() if args.prune else list_indexes()
        for r in rows:
            gone = f"  (gone: {', '.join(r['gone'])})" if r["gone"] else ""
            print(f"{'deleted ' if args.prune else ''}{r['path']}  {r['pictures']:,} pictures  {r['mib']} MiB  "
                  f"{r['updated']}  {', '.join(r['data'])}{gone}")
        if not args.prune and not rows:
            print(f"no kept indexes in {index_home()} (`langclip search --images FOLDER` makes them)")
        return 0
    if args.cmd == "index" and args.icmd == "tune":
        from ..files import read_names
        from .tune import tune_index

        texts = read_names(args.queries, "queries", '--queries "кот на диване" ... or a file with one a line',
                           commas=False) if args.queries else None
        tune_index(args.index, args.model, texts, args.k, args.target, write=not args.dry_run, device=args.device,
                   weights=args.weights)
        return 0
    if args.cmd == "index":
        over = {k: v for k, v in (("workers", args.workers), ("device", args.device)) if v is not None}
        update_index(args.index, args.data, drop_unreachable=args.drop_unreachable, **over)
        return 0
    if args.cmd == "search":
        for r in search(args.index, args.model, args.query, args.image, args.k, args.arch, args.device, args.weights,
                        as_json=args.json, as_typed=args.as_typed, add=args.add, subtract=args.subtract,
                        paths_only=args.paths, images=args.images, update=not args.no_update,
                        preview=(args.preview_height if args.preview_height > 0 else -1) if args.preview else 0):
            print(r)
        return 0
    from .folder import index_for
    from .server import check_root_path, serve

    root_path = check_root_path(args.root_path)   # before --images builds an index

    # --images: indexed with the first model's image tower (each model is checked against the index)
    index = index_for(args.index, args.images, args.model[0], args.arch, args.weights, args.device, not args.no_update)
    serve(index, args.model, args.host, args.port, serve_token(args.token, args.token_file), args.arch,
          args.device, args.weights, root_path=root_path)
    return 0


def serve_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token: --token, else --token-file's first line, else $LANGCLIP_TOKEN, else none."""
    import os

    if token and token_file:
        raise ValueError("give --token or --token-file, not both")
    if token_file:
        try:
            line = Path(token_file).read_text(encoding="utf-8").splitlines()[:1]
        except OSError as e:
            raise ValueError(f"--token-file {token_file}: cannot be read ({e.strerror or e})") from None
        if not line or not line[0].strip():
            raise ValueError(f"--token-file {token_file}: its first line is empty; expected the token")
        return line[0].strip()
    return token or os.environ.get("LANGCLIP_TOKEN") or None


def search(index: str | None, model: str, query: str | None = None, image: str | None = None, k: int = 10,
           arch: str = "", device: str | None = None, weights: str | None = None,
           as_json: bool = False, as_typed: bool = False, add=(), subtract=(), paths_only: bool = False,
           images: list[str] | None = None, update: bool = True, preview: int = 0) -> list[str]:
    """Lines to print: rank, score, path (one JSON object a line; the path alone). The query, --image and
    each --add / --subtract term (a text or a picture, optionally weighted "2:…") are combined as rclip does:
    their weighted sum of embeddings (query.combine). A query word whose tokens no training caption held is
    replaced by a trained form of it where the language has a morphology (coverage.rewrite; `as_typed`:
    not), and either is said on standard error. `images` instead of `index`: the pictures' own index,
    built or updated first (folder.folder_index). `preview`: each result's thumbnail under its line, that many
    lines of text high, in the terminal (preview.py)."""
    from ..pairs import ImageRef, open_image

    from .copies import distinct
    from .folder import index_for, one_source
    from .index import Index
    from .query import QueryModel, combine, query_terms

    if k < 1:
        raise ValueError(f"-k must be >= 1, got {k}")
    if preview < 0 or preview and (as_json or paths_only):
        raise ValueError("--preview shows the pictures beside the plain results (not with --json or --paths), "
                         "--preview-height lines high (1 or more)")
    one_source(index, images)   # before anything is read
    terms = query_terms(query, image, add, subtract)
    pictures = {}
    for t in terms:   # before any model loads
        if t.picture:
            try:
                pictures[t.value] = open_image(ImageRef(t.value), orient=True)
            except (OSError, ValueError, SyntaxError) as e:
                raise ValueError(f"{t.value}: not a readable picture ({e})") from None
    idx = Index(index_for(index, images, model, arch, weights, device, update))
    m = QueryModel(model, arch=arch, device=device, weights=weights, image=bool(pictures))
    m.check(idx)
    vecs = []
    for t in terms:
        if t.picture:
            vecs.append(m.encode_image([pictures[t.value]])[0])
            continue
        q = m.prepare(t.value, as_typed)
        _say(m.folder, q)
        vecs.append(m.encode_text([q["text"]])[0])
    vec = vecs[0] if len(terms) == 1 else combine(vecs, [t.weight for t in terms])
    hits = distinct(idx, lambda n: idx.search(vec, n)[0], k)   # each picture once, its copies listed with it
    if paths_only:
        return [idx.source(i) for i, _, _ in hits]
    if as_json:
        return [json.dumps({"rank": n, "id": i, "score": round(s, 5), "path": idx.source(i),
                            **({"copies": [idx.source(c) for c in copies]} if copies else {})}, ensure_ascii=False)
                for n, (i, s, copies) in enumerate(hits, 1)]
    lines = [f"{n:>3}  {s:.4f}  {idx.source(i)}" + "".join(f"\n{'':>11}also {idx.source(c)}" for c in copies)
             for n, (i, s, copies) in enumerate(hits, 1)]
    if preview:
        from .preview import inline, protocol

        proto, thumbs = protocol(), [idx.thumbnail(i) for i, _, _ in hits]   # each read once
        lines = [line + ("\n" + inline(t, preview, proto) if t else "") for line, t in zip(lines, thumbs)]
    return lines


def _say(folder, q: dict) -> None:
    """The notes on a query's untrained words: those answered by another form, and the others."""
    import sys

    from ..coverage import describe

    if q["rewritten"]:
        print(f"note: searched as «{q['text']}»: " + ", ".join(f"«{w}» → «{f}»" for w, f in q["rewritten"].items())
              + f" (a form of the same word that the training captions of {folder} held; --as-typed: the query as typed)",
              file=sys.stderr, flush=True)
    left = {w: p for w, p in q["unseen"].items() if w not in q["rewritten"]}
    if left:
        print(describe(folder, left), file=sys.stderr, flush=True)
