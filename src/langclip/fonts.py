"""Fonts for the pictures' labels. matplotlib draws with DejaVu Sans, which holds Latin, Greek and Cyrillic but no
Chinese, Japanese, Korean, Indic, Thai, ... characters: class names and texts in those scripts came out as empty
boxes, with a warning per character. `fit_fonts` adds the installed fonts that hold the missing characters to
matplotlib's font fallback (font.family, glyph by glyph since matplotlib 3.6); where no installed font holds
some, one warning names them and what to install."""
from __future__ import annotations

import functools
import logging
import warnings

log = logging.getLogger(__name__)

# families looked at first (the scripts' usual fonts on Linux, macOS and Windows); then every other installed font
LIKELY = ("Noto Sans", "Noto Sans CJK", "Source Han Sans", "WenQuanYi", "Droid Sans Fallback", "Unifont", "Hiragino",
          "PingFang", "Apple SD Gothic Neo", "Microsoft YaHei", "SimHei", "Yu Gothic", "Meiryo", "Malgun Gothic",
          "Nirmala UI", "Mangal", "Lohit", "Kohinoor", "Arial Unicode MS", "FreeSans", "Tahoma", "Segoe UI")
PLACEHOLDERS = ("Last Resort",)   # matplotlib's own last resort: a box with the code point for every character
INSTALL = ("Debian/Ubuntu: apt-get install fonts-noto-core fonts-noto-cjk; Fedora: dnf install google-noto-sans-fonts "
           "google-noto-sans-cjk-fonts; macOS and Windows hold fonts for most scripts")


def pyplot_for(texts):
    """matplotlib.pyplot, drawing to files (Agg), with fonts for `texts` (fit_fonts)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit_fonts(texts)
    return plt


def fit_fonts(texts) -> list[str]:
    """Add to matplotlib's font.family (after what it holds) installed fonts that hold the characters of `texts`
    its fonts lack; -> the characters no installed font holds (said once, in one warning)."""
    import matplotlib

    chars = {c for t in texts for c in str(t) if not c.isspace()}
    families = list(matplotlib.rcParams["font.family"])
    missing = chars - _covered(tuple(families))
    if not missing:
        return []
    for path, name in _candidates():
        held = missing & _charmap(path)
        if held and name not in families:
            families.append(name)
            missing -= held
            if not missing:
                break
    matplotlib.rcParams["font.family"] = families
    if missing:
        _say_missing("".join(sorted(missing)[:12]))
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")   # said once, above
    return sorted(missing)


@functools.lru_cache(maxsize=None)
def _say_missing(sample: str) -> None:
    log.warning("no installed font holds %s: the picture shows them as boxes (%s)", sample, INSTALL)


def _covered(families: tuple[str, ...]) -> frozenset:
    """The characters the fonts of `families` hold (a generic family: the font matplotlib picks for it)."""
    from matplotlib import font_manager

    out: set = set()
    for f in families:
        path = font_manager.findfont(font_manager.FontProperties(family=[f]), fallback_to_default=False)
        out |= _charmap(path)
    return frozenset(out)


def _candidates() -> list[tuple[str, str]]:
    """(path, family name) of every installed font matplotlib knows, the LIKELY families first."""
    from matplotlib import font_manager

    fonts = {f.fname: f.name for f in font_manager.fontManager.ttflist if not f.name.startswith(PLACEHOLDERS)}
    first = [(p, n) for p, n in fonts.items() if n.startswith(LIKELY)]
    return first + [(p, n) for p, n in fonts.items() if not n.startswith(LIKELY)]


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(chr(c) for c in FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):   # a font FreeType cannot read: holds nothing usable
        return frozenset()
