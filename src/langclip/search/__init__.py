"""Search a photo collection with words: an index of image embeddings made by a frozen CLIP image tower
(`index.py`), queried by any text tower trained on that tower (`query.py`), over HTTP (`server.py`)."""
from .index import INDEX_FORMAT, Index, build_index, update_index
from .query import QueryModel

__all__ = ["INDEX_FORMAT", "Index", "QueryModel", "build_index", "update_index"]
