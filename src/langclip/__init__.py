"""langclip: teach OpenAI's CLIP a new language.

    import langclip
    m = langclip.load("runs/ru")                     # a run folder or an export folder
    probs = m.classify(images, ["кот", "собака"])    # (N, 2)
"""
__version__ = "0.1.0"

__all__ = ["load", "Tokenizer", "__version__"]


def __getattr__(name):  # lazy: `import langclip` stays light (no torch import)
    if name == "load":
        from .inference import load

        return load
    if name == "Tokenizer":
        from .tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(name)
