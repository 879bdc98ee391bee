"""`langclip demo`: the whole method on a built-in bilingual image world (see run.py)."""
from .run import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
