"""`langclip demo`: the whole method on a built-in bilingual image world (see run.py)."""
from ..config import DemoConfig
from .run import run_demo

__all__ = ["DemoConfig", "run_demo"]
