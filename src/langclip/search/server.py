"""`langclip serve`: the index over HTTP (FastAPI, served by uvicorn) and one static page.

    GET  /                     the page (no CDN, no build step; its strings in six languages)
    GET  /api/health           status, the models (a language each) and the index that answer
    GET  /api/search?q=&k=     text query (&model=KEY: one of /api/health's models; default the first;
                               &add=, &subtract=: more texts, "2:…" weighted, combined as `search --add`)
    POST /api/search/image     an uploaded picture (multipart field "file")
    GET  /api/similar/{id}?k=  pictures like an indexed one
    GET  /thumb/{id}           its thumbnail;  GET /image/{id}: the picture itself
    GET  /docs                 OpenAPI

The index is reloaded when `index update` (or `index tune`) has rewritten it: each request answers from
one version of it (`LiveIndex`). Read-only. Files are served by index id only, never by path. Query
length, k, upload size and pixel count are capped (4xx with a message). With a token, every route but /
and /api/health needs `Authorization: Bearer TOKEN` (or `?token=`, for <img> tags).
"""

import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

MAX_QUERY = 300          # characters
MAX_K = 100
MAX_UPLOAD = 10 << 20    # bytes
MAX_PIXELS = 40_000_000
MAX_TERMS = 8            # texts a search may add or subtract
MIN_SIZE, MAX_SIZE = 64, 8192   # /image/{id}?size=: pixels a side


@dataclass
class Limits:
    max_query: int = MAX_QUERY
    max_k: int = MAX_K
    max_upload: int = MAX_UPLOAD
    max_pixels: int = MAX_PIXELS


def model_keys(models) -> dict:
    """{key: QueryModel}: a model's language where each has its own ("ru", "uk"), else its folder's name."""
    from pathlib import Path

    langs = [getattr(m, "lang", None) for m in models]
    if all(langs) and len(set(langs)) == len(langs):
        return dict(zip(langs, models))
    keys: dict = {}
    for m in models:
        base = Path(str(getattr(m, "folder", None) or m.name)).name or "model"
        key, n = base, 2
        while key in keys:
            key, n = f"{base}-{n}", n + 1
        keys[key] = m
    return keys


class LiveIndex:
    """The version of an index a long-lived server answers from, reloaded when its manifest.json — the file
    `index update` writes last — is a new file (looked at no more than every `every` seconds). Each version
    has its files open (`Index.pinned`), so a request that holds it reads one version to the end; a version
    that cannot be read (an update half written) or whose image tower fails `check` keeps the one before."""

    def __init__(self, index, check=None, every: float = 2.0):
        self.index, self._check, self._every = index.pinned(), check, every
        self._stamp = self._seen = _stamp(index.path)
        self._next = time.monotonic() + every
        self._lock = threading.Lock()

    def current(self):
        now = time.monotonic()
        if now >= self._next and self._lock.acquire(blocking=False):
            try:
                self._next = now + self._every
                stamp = _stamp(self.index.path)
                if stamp != self._stamp and stamp != self._seen:
                    self._seen = stamp
                    self._reload(stamp)
            finally:
                self._lock.release()
        return self.index

    def _reload(self, stamp) -> None:
        from .index import Index

        log = logging.getLogger("langclip")
        try:
            new = Index(self.index.path).pinned()
            if self._check is not None:
                self._check(new)
        except Exception as e:  # noqa: BLE001 - the server keeps answering from the version it has
            log.warning("%s changed but was not reloaded (%s); still answering from %s pictures", self.index.path,
                        e, f"{len(self.index):,}")
            return
        self.index, self._stamp = new, stamp
        log.warning("%s reloaded: %s pictures (updated %s)", new.path, f"{len(new):,}", new.manifest.get("updated"))


def _shown(index) -> str:
    """The index's name on the page: its folder's, or for one `search --images` keeps (named by a digest) the
    pictures' folders'."""
    from .folder import index_home

    if index.path.resolve().parent == index_home().resolve() and index.manifest.get("data"):
        return ", ".join(os.path.basename(str(d).rstrip("/")) for d in index.manifest["data"])
    return index.path.name


def _stamp(path) -> tuple:
    try:
        st = os.stat(os.path.join(path, "manifest.json"))
    except OSError:
        return ()
    return st.st_ino, st.st_mtime_ns, st.st_size


def create_app(index, model, token: str | None = None, limits: Limits | None = None, reload_every: float = 2.0):
    """The app for an `Index` and a `QueryModel`, or several (each checked to share the index's image tower:
    text towers of several languages over one index); the first answers by default, and for pictures.
    The index is looked at for a new version at most every `reload_every` seconds (`LiveIndex`).
    Behind a reverse proxy under a path, the ASGI server's root path (uvicorn's, `serve(root_path=)`) leads
    the links in the answers and the API docs; the page needs none (its requests are relative to its address)."""
    import numpy as np
    from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, Response

    from .copies import distinct
    from .query import combine, query_terms
    from .served import for_browser, open_upload

    models = list(model) if isinstance(model, (list, tuple)) else [model]

    def check(ix):
        for m in models:
            m.check(ix)

    check(index)
    live = LiveIndex(index, check, reload_every)
    keys, model = model_keys(models), models[0]
    lim = limits or Limits()
    app = FastAPI(title="langclip search", version="1",
                  description=f"{len(index):,} pictures; model{'s' * (len(models) > 1)} "
                              f"{', '.join(m.name for m in models)}; read-only")
    page = (resources.files("langclip") / "resources" / "search" / "index.html").read_text(encoding="utf-8")

    def auth(request: Request):
        if not token:
            return
        got = request.headers.get("authorization", "")
        got = got[7:] if got.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not secrets.compare_digest(got.encode(), token.encode()):
            raise HTTPException(401, "a bearer token is required (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    def results(ix, ranked, k: int, request: Request, drop: int | None = None):
        """The best k distinct pictures of `ranked(n)` (copies.distinct), with the count of the index version that
        answered (the page's status line)."""
        root = request.scope.get("root_path", "").rstrip("/")   # a reverse proxy's path for the app ("/photos")
        name = lambda i: ix.source(i).rsplit("/", 1)[-1]   # noqa: E731
        return {"results": [{"id": i, "score": round(s, 5), "name": name(i), "folder": _folder(ix, i),
                             "thumb": f"{root}/thumb/{i}",
                             "image": f"{root}/image/{i}", **({"copies": [{"id": c, "name": name(c)} for c in copies]}
                                                              if copies else {})}
                            for i, s, copies in distinct(ix, ranked, k, drop)], "pictures": len(ix)}

    def check_k(k: int):
        if not 1 <= k <= lim.max_k:
            raise HTTPException(422, f"k must be between 1 and {lim.max_k}")

    def known(ix, id_: str) -> int:
        """Files are reached by index id only: anything else in the path (a file name, ../) is a 404."""
        if not id_.isascii() or not id_.isdigit() or int(id_) not in ix.row_of:
            raise HTTPException(404, f"no picture with id {id_[:40]!r} in this index")
        return int(id_)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home():
        return page

    @app.get("/api/health")
    def health():
        index = live.current()
        return {"status": "ok", "model": model.name, "lang": getattr(model, "lang", None),
                "models": [{"key": k, "name": m.name, "lang": getattr(m, "lang", None)} for k, m in keys.items()],
                "index": {"pictures": len(index), "dim": index.dim,
                "path": _shown(index), "tower": index.tower_sha256[:12], "updated": index.manifest.get("updated"),
                "search": "approximate (faiss IVF)" if index.manifest.get("ann") else "exact"}, "auth": bool(token)}

    def picture_terms(ix, add_id: list[str], subtract_id: list[str]) -> list[tuple[int, float]]:
        """add_id=/subtract_id=: pictures of this index by id, each optionally weighted ("2:17")."""
        out = []
        for raw, sign in [(x, 1.0) for x in add_id] + [(x, -1.0) for x in subtract_id]:
            w, _, id_ = raw.rpartition(":")
            try:
                weight = float(w) if w else 1.0
            except ValueError:
                raise HTTPException(422, f"{raw[:40]!r}: a picture term is an id, or weight:id (\"2:17\")") from None
            out.append((known(ix, id_), sign * weight))
        return out

    @app.get("/api/search", dependencies=[Depends(auth)])
    def search(request: Request, q: str = Query("", description="what to look for, in any language the model reads"),
               k: int = Query(24, description=f"how many results (1..{MAX_K})"),
               as_typed: bool = Query(False, description="no untrained word replaced by a trained form of it"),
               model_key: str | None = Query(None, alias="model", description="which text tower reads the query "
                                             "(/api/health's models; default: the first)"),
               add: list[str] = Query([], description="texts to look for as well (repeatable; \"2:…\" weighs one)"),
               subtract: list[str] = Query([], description="texts to look away from (repeatable)"),
               add_id: list[str] = Query([], description="pictures of this index to look for as well, by id "
                                         "(repeatable; \"2:17\" weighs one)"),
               subtract_id: list[str] = Query([], description="pictures of this index to look away from, by id")):
        if model_key is not None and model_key not in keys:
            raise HTTPException(422, f"no model {model_key[:40]!r} here; this server has {', '.join(keys)}")
        m = keys[model_key] if model_key is not None else model
        if not q.strip() and not add and not add_id:
            raise HTTPException(422, "the query is empty")
        if any(len(x) > lim.max_query for x in [q, *add, *subtract]):
            raise HTTPException(413, f"the query is longer than {lim.max_query} characters")
        if len(add) + len(subtract) + len(add_id) + len(subtract_id) > MAX_TERMS:
            raise HTTPException(422, f"more than {MAX_TERMS} terms to add or subtract")
        check_k(k)
        ix = live.current()
        pics = picture_terms(ix, add_id, subtract_id)
        try:
            terms = query_terms(q.strip() or None, None, add, subtract, pictures=False,
                                looking_for=any(w > 0 for _, w in pics))
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        # words the run never trained on, and those searched as a trained form of them (coverage.py)
        ps = [m.prepare(t.value, as_typed) if hasattr(m, "prepare") else {"text": t.value, "unseen": {}, "rewritten": {}}
              for t in terms]
        vecs = [*(m.encode_text([p["text"] for p in ps]) if ps else []), *(ix.vector(i) for i, _ in pics)]
        weights = [t.weight for t in terms] + [w for _, w in pics]
        try:
            vec = vecs[0] if len(vecs) == 1 and weights[0] > 0 else combine(np.stack(vecs), weights)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        return {"query": q, "searched": ps[0]["text"] if q.strip() else "",
                "unseen": {w: v for p in ps for w, v in p["unseen"].items()},
                "rewritten": {w: v for p in ps for w, v in p["rewritten"].items()},
                **({"terms": [{"text": t.value, "weight": t.weight, "searched": p["text"]} for t, p in zip(terms, ps)]
                    + [{"picture": i, "weight": w} for i, w in pics]} if len(vecs) > 1 else {}),
                **results(ix, lambda n: ix.search(vec, n)[0], k, request)}

    @app.post("/api/search/image", dependencies=[Depends(auth)])
    async def search_image(request: Request, file: UploadFile = File(...), k: int = Query(24)):
        check_k(k)
        data = await file.read(lim.max_upload + 1)
        if len(data) > lim.max_upload:
            raise HTTPException(413, f"the upload is larger than {lim.max_upload >> 20} MiB")

        def answer():   # decoding and the image tower, off the event loop: the other requests go on meanwhile
            im = open_upload(data, lim.max_pixels, HTTPException)
            ix = live.current()
            vec = model.encode_image([im])[0]
            return results(ix, lambda n: ix.search(vec, n)[0], k, request)

        return await run_in_threadpool(answer)

    @app.get("/api/similar/{id_}", dependencies=[Depends(auth)])
    def similar(request: Request, id_: str, k: int = Query(24)):
        check_k(k)
        ix = live.current()
        id_ = known(ix, id_)
        return results(ix, lambda n: ix.search(ix.vector(id_), n)[0], k, request, drop=id_)   # nor its copies

    @app.get("/thumb/{id_:path}", dependencies=[Depends(auth)])
    def thumb(id_: str):
        ix = live.current()
        id_ = known(ix, id_)
        return Response(ix.thumbnail(id_), media_type="image/jpeg",   # an id's picture never changes: cacheable
                        headers={"Cache-Control": "max-age=3600"})

    @app.get("/image/{id_:path}", dependencies=[Depends(auth)])
    def image(id_: str, size: int | None = Query(None, description="at most this many pixels a side: a larger "
                                                 f"picture comes as a JPEG scaled down ({MIN_SIZE}..{MAX_SIZE}; the "
                                                 "page's viewer asks its screen's size); default: as it is")):
        ix = live.current()
        id_ = known(ix, id_)
        if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
            raise HTTPException(422, f"size must be between {MIN_SIZE} and {MAX_SIZE}")
        try:
            data = ix.image_bytes(id_)
        except OSError:
            raise HTTPException(410, f"picture {id_} is gone from disk; run `langclip index update`") from None
        try:
            data, mime = for_browser(data, size or 0)
        except Exception:   # noqa: BLE001 - changed on disk since it was indexed
            raise HTTPException(410, f"picture {id_} can no longer be read; run `langclip index update`") from None
        return Response(data, media_type=mime)

    return app


def _folder(ix, id_: int) -> str:
    """The folder of a picture within the data folder it was indexed from ("2024/summer"; "" at its top, or for a
    table's or a shard's picture): two cameras' IMG_0001.JPG told apart, and no path of the server's shown."""
    src = ix.source(id_)
    for d in ix.manifest.get("data") or []:
        top = str(Path(d).expanduser()).rstrip("/") + "/"
        if src.startswith(top) and "::" not in src:
            return src[len(top):].rpartition("/")[0]
    return ""


def check_root_path(root_path: str) -> str:
    """A reverse proxy's path for the app: "/photos" (a trailing slash dropped; "" or "/": none)."""
    root_path = (root_path or "").rstrip("/")
    if root_path and (not root_path.startswith("/") or any(c in root_path for c in "?#\\ ")):
        raise ValueError(f"--root-path {root_path!r}: a path as the proxy serves the app under, e.g. /photos")
    return root_path


def serve(index_path: str, model_path: str | list[str], host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, arch: str = "", device: str | None = None, weights: str | None = None,
          root_path: str = "") -> None:
    """`model_path`: one model, or several (their languages offered side by side; the first for pictures).
    `root_path`: the path a reverse proxy that strips it serves the app under ("/photos"; uvicorn's --root-path)."""
    import logging

    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise ImportError("langclip serve needs FastAPI and uvicorn: pip install 'langclip[search]'") from None

    from .index import Index
    from .query import QueryModel

    root_path = check_root_path(root_path)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("langclip").warning(
            "serving on %s: anyone who reaches this machine can search and view the pictures%s", host,
            "" if token else " (no token: give --token-file or $LANGCLIP_TOKEN)")
    paths = [model_path] if isinstance(model_path, str) else list(model_path)
    app = create_app(Index(index_path), [QueryModel(p, arch=arch, device=device, weights=weights, image=i == 0)
                                         for i, p in enumerate(paths)], token)
    print(f"langclip search: http://{host if ':' not in host else f'[{host}]'}:{port}/  (API docs: /docs)"
          + (f"; behind the proxy at {root_path}/" if root_path else ""))
    uvicorn.run(app, host=host, port=port, log_level="warning", root_path=root_path)
