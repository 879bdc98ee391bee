"""Text cleaning as open_clip's SimpleTokenizer does it (ftfy, HTML unescape twice, whitespace
collapse, lower case), with cheap predicates that skip ftfy where it provably changes nothing, and
CLIP's pre-tokenizer."""
from __future__ import annotations

import functools
import html
import re
import unicodedata

import regex

from .vocab import PRETOKENIZE_PATTERN, char_class

PRE = regex.compile(PRETOKENIZE_PATTERN, regex.IGNORECASE)


@functools.lru_cache()
def pre_regex(pattern: str = PRETOKENIZE_PATTERN) -> "regex.Pattern":
    """A pre-tokenizer pattern, compiled as CLIP compiles its own (case-insensitive)."""
    return PRE if pattern == PRETOKENIZE_PATTERN else regex.compile(pattern, regex.IGNORECASE)


WS = regex.compile(r"\s+")


@functools.lru_cache()
def non_letters(pattern: str = PRETOKENIZE_PATTERN) -> "regex.Pattern | None":
    """What a pre-tokenizer pattern's run of letters (its `[\\p{L}...]` alternative, after the
    apostrophe ones) does not take, nor white space: a space-free chunk holding none of it is one
    pre-token, and searching a whole batch for it is several times faster than cutting every chunk.
    Compiled without the pattern's IGNORECASE: a character it lets through is in the class as it is,
    so the case-insensitive run takes it too (U+0345, a mark that folds to a letter, is found here and
    cut by the pattern; a case-insensitive complement would let it through). None for a pattern of
    another shape."""
    m = re.match(r"'s\|'t\|'re\|'ve\|'m\|'ll\|'d\|(?:\(\?:)?\[\\p\{L\}([^\[\]]*)\]", pattern)
    return regex.compile(r"[^\s\p{L}" + m.group(1) + "]") if m else None


SEP = "\x00"  # separates texts in a batch; never in a cleaned text (checked)


@functools.lru_cache()
def ftfy_sensitive() -> frozenset:
    """Characters on which some ftfy fixer (or html.unescape) may act; built from ftfy's own tables."""
    from ftfy import chardata

    chars = set(chardata.LIGATURES) | set(chardata.WIDTH_MAP) | set(chardata.CONTROL_CHARS)
    chars |= set(range(0x80, 0xA0)) | set(range(0xD800, 0xE000))  # C1 controls, surrogates
    chars |= {ord(c) for c in "&\r\x0b\x0c\x1b\u2028\u2029\u02bc\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"}
    return frozenset(chr(c) for c in chars if c not in (0x09, 0x0a, 0x20))


def _sre():
    """(constants, parser) of Python's regex engine, for reading ftfy's pattern."""
    try:
        from re import _constants as C, _parser as P  # Python >= 3.11
    except ImportError:  # pragma: no cover
        import sre_constants as C
        import sre_parse as P
    return C, P


def _charset(item) -> set[int] | None:
    """Code points a parsed regex item (a literal or a plain character class) can match; None if any."""
    C, _ = _sre()
    op, av = item
    if op is C.LITERAL:
        return {av}
    if op is not C.IN:
        return None
    out: set[int] = set()
    for o, a in av:
        if o is C.LITERAL:
            out.add(a)
        elif o is C.RANGE:
            out.update(range(a[0], a[1] + 1))
        else:  # negation, categories (\w, \s): may match anything
            return None
    return out


BASIC_GREEK_CYRILLIC = frozenset(range(0x391, 0x3AA)) | frozenset(range(0x3B1, 0x3CA)) | \
    frozenset(range(0x410, 0x450)) | {0x401, 0x451}


def _commonness(cp: int) -> int:
    """How often a character turns up in ordinary text, roughly: printable ASCII > the basic Greek and
    Russian alphabets > the other letters of the Latin, Greek and Cyrillic blocks (ä, ß, ł, ą, ї, ...) >
    the rest (symbols, box drawing, C1 controls)."""
    if 0x20 <= cp < 0x7F:
        return 1000
    if cp in BASIC_GREEK_CYRILLIC:
        return 100
    if chr(cp).isalpha() and (cp < 0x250 or 0x370 <= cp < 0x530 or 0x1E00 <= cp < 0x1F00):
        return 10
    return 1


@functools.lru_cache()
def mojibake_triggers() -> frozenset:
    """A set of characters that every match of ftfy's mojibake detector (`badness.BADNESS_RE`) contains
    at least one of: for each alternative of the regex, the mandatory item whose characters are rarest
    in ordinary text (`_commonness`). Text with none of them cannot be `is_bad`, so ftfy's encoding
    fixer leaves it unchanged, and the (slow) regex need not run. Any mandatory item is sound; the
    rarest one keeps ordinary text off the slow path: German, French or Polish words (their accented
    letters) as well as Russian ones (until session 13 the choice counted only ASCII and the basic
    Greek and Russian letters as common, and every text with an ä or é took the slow path). Derived
    from ftfy's own regex, so it follows ftfy's version."""
    C, P = _sre()
    from ftfy.badness import BADNESS_RE

    tree = P.parse(BADNESS_RE.pattern, BADNESS_RE.flags)
    if BADNESS_RE.flags & re.IGNORECASE or len(tree.data) != 1 or tree.data[0][0] is not C.BRANCH:
        return frozenset(map(chr, range(0x80, 0x110000)))  # unknown shape: every non-ASCII text checks
    out: set[int] = set()
    for alt in tree.data[0][1][1]:
        sets = [s for s in map(_charset, alt) if s is not None]
        if not sets:
            return frozenset(map(chr, range(0x80, 0x110000)))
        out |= min(sets, key=lambda s: sum(map(_commonness, s)))
    return frozenset(map(chr, out))


@functools.lru_cache()
def odd_spaces() -> frozenset:
    """White space that `str.split` and CLIP's `\\s` disagree on (it ends at U+3000 in Unicode; a test
    checks the whole range)."""
    return frozenset(c for c in map(chr, range(0x3001)) if c.isspace() != bool(WS.fullmatch(c)))


@functools.lru_cache()
def slow_chars() -> frozenset:
    """Characters that send a non-ASCII text through ftfy: the fixers' characters, the mojibake
    detector's triggers, and the odd white space."""
    return ftfy_sensitive() | mojibake_triggers() | odd_spaces() | {SEP}


@functools.lru_cache()
def slow_re() -> "re.Pattern":
    """`slow_chars` as one character class: a search is ~7x faster than `frozenset.isdisjoint`."""
    return re.compile("[" + char_class(map(ord, slow_chars()), lambda cp: re.escape(chr(cp))) + "]")


@functools.lru_cache()
def sep_breakers() -> "re.Pattern":
    """White space that CLIP's `\\s` does not know, which would break the batch's single `str.split`.
    ftfy removes it all; the check guards against ftfy changing."""
    return re.compile("[" + "".join(map(re.escape, sorted(odd_spaces()))) + "]")


def needs_ftfy(text: str) -> bool:
    """False when ftfy.fix_text and html.unescape would return `text` unchanged, decided cheaply.

    ftfy runs its fixers until nothing changes; on text with none of the characters its fixers touch,
    that is NFC already and that its mojibake detector (`is_bad`) does not flag, every fixer is the
    identity. Printable ASCII without '&' is the common case; `is_bad` runs only on the rare text
    holding one of its trigger characters."""
    if text.isascii():
        return not text.isprintable() or "&" in text
    if not unicodedata.is_normalized("NFC", text) or not ftfy_sensitive().isdisjoint(text):
        return True
    if mojibake_triggers().isdisjoint(text):
        return False
    from ftfy.badness import is_bad

    return is_bad(text)


def clean(text: str) -> str:
    """open_clip's `_clean_lower`: ftfy, HTML-unescape twice, strip, collapse whitespace, lower-case."""
    if needs_ftfy(text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return WS.sub(" ", text).strip().lower()


def pretokenize(cleaned: str, pattern: str = PRETOKENIZE_PATTERN) -> list[str]:
    """CLIP's pre-tokenization of cleaned text: 'a cat's 2 paws!' -> ['a', 'cat', "'s", '2', 'paws', '!']
    (or another `vocab.pretokenize_pattern`'s)."""
    return pre_regex(pattern).findall(cleaned)
