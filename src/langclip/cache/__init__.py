"""Stage 2, the image-embedding cache: `embed.py` builds it, `store.py` is its folder format."""
from .embed import auto_workers, build_cache
from .store import CacheData, check_cache_matches, load_cache, read_captions, read_manifest, write_normalized, write_teacher_dense

__all__ = ["CacheData", "auto_workers", "build_cache", "check_cache_matches", "load_cache", "read_captions", "read_manifest",
           "write_normalized", "write_teacher_dense"]
