"""langclip: teach OpenAI's CLIP a new language.

    >>> import langclip
    >>> from PIL import Image
    >>> m = langclip.load("runs/ru")                  # a run folder or an export folder
    >>> m.classify([Image.open("cat.jpg")], ["кот", "собака"], lang="ru").shape   # probabilities
    torch.Size([1, 2])
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
