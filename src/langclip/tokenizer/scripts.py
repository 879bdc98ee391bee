"""Which characters are the target language's: its scripts, found from the corpus; the rule that keeps
English ids unchanged (`ScriptGuard`); and the marks and joiners a script writes inside its words, which
the pre-tokenizer then keeps inside them (`vocab.pretokenize_pattern`)."""
from __future__ import annotations

import functools
import unicodedata
from collections import Counter

from .vocab import SUFFIX, unicode_to_bytes


# -- English stays CLIP's, by construction ------------------------------------------------------
def char_script(ch: str) -> str:
    """The first word of a character's Unicode name: 'к' -> 'CYRILLIC', '北' -> 'CJK', '!' -> 'EXCLAMATION'."""
    return unicodedata.name(ch, "?").split(" ", 1)[0]


def char_weights(weights: Counter) -> dict[str, float]:
    """Each character's summed weight over the words it stands in (once per occurrence), counted in
    numpy: {'да': 2, 'до': 1} -> {'д': 3, 'а': 2, 'о': 1}."""
    import numpy as np

    if not weights:
        return {}
    cps = np.frombuffer("".join(weights).encode("utf-32-le"), np.uint32)
    lengths = np.fromiter(map(len, weights), np.int64, len(weights))
    w = np.repeat(np.asarray(list(weights.values())), lengths)   # int64, or float64 for frequencies
    order = np.argsort(cps, kind="stable")
    cps, w = cps[order], w[order]
    first = np.flatnonzero(np.concatenate(([True], cps[1:] != cps[:-1])))
    return dict(zip(map(chr, cps[first].tolist()), np.add.reduceat(w, first).tolist()))


def target_scripts(weights: Counter, share: float = 0.05) -> list[str]:
    """The scripts of the target language: the non-Latin ones holding >= `share` of the corpus's whole
    letter mass (Latin included); for a Latin-script language (nothing else qualifies), 'LATIN' (its
    non-ASCII letters). Japanese -> CJK, HIRAGANA, KATAKANA; German -> LATIN, however many Cyrillic,
    Greek or Katakana words its list holds (they once outvoted it: a share of the non-Latin mass)."""
    mass: Counter = Counter()
    for ch, w in char_weights(weights).items():   # a few thousand distinct characters: names looked up once
        if ch.isalpha():
            mass[char_script(ch)] += w
    total = sum(mass.values())
    own = sorted(k for k, v in mass.items() if k != "LATIN" and v >= share * total) if total else []
    return own or ["LATIN"]


# Unicode blocks of common scripts: a block's every character counts as the script's, so that e.g. the
# Coptic letters inside "Greek and Coptic" do not make every Greek lead byte ambiguous.
SCRIPT_BLOCKS: dict[str, tuple[tuple[int, int], ...]] = {
    "CYRILLIC": ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)),
    "GREEK": ((0x0370, 0x03FF), (0x1F00, 0x1FFF)),
    "ARMENIAN": ((0x0530, 0x058F),), "HEBREW": ((0x0590, 0x05FF),),
    "ARABIC": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "DEVANAGARI": ((0x0900, 0x097F),), "BENGALI": ((0x0980, 0x09FF),), "TAMIL": ((0x0B80, 0x0BFF),),
    "THAI": ((0x0E00, 0x0E7F),), "GEORGIAN": ((0x10A0, 0x10FF), (0x2D00, 0x2D2F)),
    "HANGUL": ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF)),
    "HIRAGANA": ((0x3040, 0x309F),), "KATAKANA": ((0x30A0, 0x30FF),),
    "CJK": ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)),
}


class ScriptGuard:
    """The rule that keeps English ids unchanged: **a new merge must hold, in its two pieces together,
    part of a character of a target script that no other character shares** (for Russian: a Cyrillic
    letter, or a UTF-8 lead byte only Cyrillic characters begin with; for Vietnamese "ủ", bytes E1 BB
    A7: the pair E1 BB, which only Latin letters begin with, though neither byte alone is a Latin
    letter's). A character belongs to a script by the first word of its Unicode name or by its block
    (SCRIPT_BLOCKS). A piece that could occur in a pre-token without a target-script character is
    *protected*; two protected pieces whose join is protected too never merge.
    So a pre-token with no letter of the target script — all English, Latin-script words in Russian
    text ("lada", "xviii"), digits, punctuation, emoji, other scripts — is cut exactly as CLIP cuts it,
    by construction, whatever the corpus (BPE works per pre-token; CLIP's merges rank first).
    For a Latin-script language the target characters are its non-ASCII Latin letters (ASCII text keeps
    CLIP's ids; a word with ä or ł may not); with `ascii_letters` (`english_words`) its ASCII letters
    too, and banned pairs keep English words whole instead (`train.english_pairs`).

        ScriptGuard(["CYRILLIC"]).protected("lad") -> True; .protected("Ð¿") (п) -> False
    """

    def __init__(self, scripts: list[str], ascii_letters: bool = False):
        self.scripts = list(scripts)
        self.ascii_letters = ascii_letters and "LATIN" in scripts   # english_words set: ASCII letters are targets
        self._set = frozenset(scripts)
        self._byte = unicode_to_bytes()
        self._range_memo: dict[tuple[int, int], bool] = {}
        self._char_memo: dict[int, bool] = {}   # is_target of whole characters, as `protected` asks

    def _in_blocks(self, cp: int) -> bool:
        return any(lo <= cp <= hi for sc in self.scripts for lo, hi in SCRIPT_BLOCKS.get(sc, ()))

    def is_target(self, cp: int, gaps: bool = False) -> bool:
        """Whether `cp` is a character of a target script. A code point this Python's Unicode tables do
        not assign (category Cn) may be a newer character of any script (an emoji of Unicode 15): a
        target's only inside the target's blocks, or, with `gaps`, as a gap among a truncated character's
        possible code points (U+0380..U+0383 must not make Greek's lead byte CE ambiguous). Private-use
        characters and controls (assigned, but nameless) are nobody's."""
        if "LATIN" in self._set and cp < 0x80:
            return self.ascii_letters and (0x61 <= cp <= 0x7A or 0x41 <= cp <= 0x5A)
        if unicodedata.category(chr(cp)) == "Cn":
            return gaps or self._in_blocks(cp)
        return unicodedata.name(chr(cp), "").split(" ", 1)[0] in self._set or self._in_blocks(cp)

    def _all_target(self, lo: int, hi: int) -> bool:
        """Every code point in [lo, hi] a truncated UTF-8 sequence may begin is a target character or a
        gap, and at least one is a target character (a range of gaps alone may be anyone's)."""
        key = (lo, hi)
        if key not in self._range_memo:   # a huge range (a lone 4-byte lead) is never all target: protected
            self._range_memo[key] = hi - lo < 8192 and all(self.is_target(c, gaps=True) for c in range(lo, hi + 1)) \
                and any(self.is_target(c) for c in range(lo, hi + 1))
        return self._range_memo[key]

    def protected(self, symbol: str) -> bool:
        if symbol.endswith(SUFFIX):
            symbol = symbol[: -len(SUFFIX)]
        bs = [self._byte[c] for c in symbol]
        i, n = 0, len(bs)
        while i < n and 0x80 <= bs[i] < 0xC0:   # the tail of a character begun before this piece: any
            i += 1                               # character may end so (conservatively: protected)
        while i < n:
            b = bs[i]
            size = 1 if b < 0x80 else 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            cp = b if size == 1 else b & (0xFF >> (size + 1))
            got = bs[i + 1: i + size]
            for c in got:
                cp = (cp << 6) | (c & 0x3F)
            missing = size - 1 - len(got)
            if missing == 0:
                target = self._char_memo.get(cp)
                if target is None:
                    target = self._char_memo[cp] = self.is_target(cp)
                if target:
                    return False
            elif self._all_target(cp << (6 * missing), ((cp + 1) << (6 * missing)) - 1):
                return False   # a truncated character that only target characters begin with
            i += size
        return True


# -- scripts written with combining marks -----------------------------------------------------------
@functools.lru_cache()
def combining_marks() -> tuple[int, ...]:
    """Every code point of Unicode's mark categories (Mn, Mc, Me) in Python's tables."""
    return tuple(cp for cp in range(0x110000) if unicodedata.category(chr(cp))[0] == "M")


def script_marks(weights: Counter, guard: ScriptGuard, share: float = 0.01) -> str:
    """The combining marks of the target scripts (all that Unicode has, seen or not) if the corpus
    writes with them — words holding one carry >= `share` of its mass —, else ''. CLIP's pattern cuts
    a word at each mark, which is not a letter (Hindi "हिन्दी" -> 6 pre-tokens, and no merge can join
    them); counted as letters, the word is one pre-token. Russian, Greek, Chinese, Japanese, Arabic as
    wordfreq writes it: '' (CLIP's pattern unchanged). The marks are target characters, so the English
    rule holds: text without them is pre-tokenized as CLIP does it."""
    marks = frozenset(chr(cp) for cp in combining_marks() if guard.is_target(cp))
    total = sum(weights.values())
    if not total or marks.isdisjoint("".join(weights)):
        return ""
    marked = sum(w for word, w in weights.items() if not marks.isdisjoint(word))
    return "".join(sorted(marks)) if marked >= share * total else ""


JOINERS = "\u200c\u200d"   # zero-width non-joiner and joiner


def script_joiners(weights: Counter, guard: ScriptGuard, share: float = 0.005) -> str:
    """The target scripts' letters and marks (of the Basic Multilingual Plane) if the corpus writes a
    zero-width non-joiner or joiner inside its words — CLIP's pattern leaves one alone as a pre-token,
    and such pre-tokens carry >= `share` of the weight (Persian's wordfreq list: 1.4%) —, else ''.
    A joiner counts as part of a word only between two of these characters, so text without them is
    cut as CLIP cuts it (an emoji sequence's joiner, "a\\u200cb")."""
    total = sum(weights.values())
    if guard.scripts == ["LATIN"] or not total or sum(weights.get(j, 0) for j in JOINERS) < share * total:
        return ""
    return "".join(chr(cp) for cp in range(0x80, 0x10000) if unicodedata.category(chr(cp))[0] in "LM"
                   and guard.is_target(cp))
