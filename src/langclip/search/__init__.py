"""Search a photo collection with words: an index of image embeddings made by a frozen CLIP image tower
(`index.py`), queried by any text tower trained on that tower (`query.py`), over HTTP (`server.py`).
The names below load on first use, so that `langclip --help` (whose parser includes `search/cli.py`)
does not import torch."""

__all__ = ["INDEX_FORMAT", "Index", "QueryModel", "build_index", "update_index"]


def __getattr__(name):
    if name == "QueryModel":
        from .query import QueryModel

        return QueryModel
    if name in __all__:
        from . import index

        return getattr(index, name)
    raise AttributeError(name)
