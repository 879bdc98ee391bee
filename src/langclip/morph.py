"""Grammatical forms of class names and labels, for templates that name the form they need
("фото {gen}": a photo *of a cat*, genitive). Russian and Ukrainian forms come from pymorphy3; a
language without a morphology here uses the label as given for every form.

    >>> label_forms("красный круг", "ru")["gen"]
    'красного круга'
    >>> label_forms("солодкий перець", "uk")["gen"]
    'солодкого перцю'
    >>> label_forms("cat", "en")["gen"]
    'cat'
"""
from __future__ import annotations

import functools
import string

CASES = {"nom": "nomn", "gen": "gent", "dat": "datv", "acc": "accs", "ins": "ablt", "loc": "loct"}


MORPH_LANGS = ("ru", "uk")   # pymorphy3's dictionaries: pymorphy3-dicts-ru and -uk (both dependencies)


@functools.lru_cache()
def _morph(lang: str = "ru"):
    import pymorphy3

    return pymorphy3.MorphAnalyzer(lang=lang)


def analyzer(lang: str):
    """pymorphy3's analyser for `lang` (one of MORPH_LANGS), made once."""
    return _morph(lang)


def lemma(word: str, lang: str | None) -> str | None:
    """The dictionary form of `word` from simplemma's lists (about 50 languages, shipped with the package:
    Spanish "rojas" -> "rojo", German "roten" -> "rot", Greek "κόκκινες" -> "κόκκινος"); None where it is
    the word itself, unknown, or the language is not among them."""
    if not lang or not word:
        return None
    from simplemma import lemmatize
    from simplemma.strategies.dictionaries.dictionary_factory import SUPPORTED_LANGUAGES

    if lang not in SUPPORTED_LANGUAGES:
        return None
    out = lemmatize(word, lang=lang)
    return out if out.lower() != word.lower() else None


def _nominative_parse(word: str, lang: str = "ru", modifier: bool = False, gender: str | None = None):
    """The most likely nominative reading of `word` (nouns first, then adjectives/participles), or None.
    modifier: the word stands before the phrase's last agreeing word, where an adjective or participle
    reading comes first ("смажені кальмари": "смажені" is also a plural noun, fried food).
    gender: the gender of the words that agree with it: a reading of that gender comes first ("червона
    зірка": the feminine noun, not the masculine one the dictionary also lists)."""
    # (Ukrainian's dictionary tags some lemmas without a case: "жаба NOUN,femn,inan" is the nominative)
    parses = [p for p in _morph(lang).parse(word)
              if "nomn" in p.tag or (lang == "uk" and p.tag.case is None and p.word == p.normal_form)]
    if not parses:
        return None
    if modifier and any(p.tag.POS in ("ADJF", "PRTF") for p in parses):
        parses = [p for p in parses if p.tag.POS in ("ADJF", "PRTF")]
    if gender and any(gender in p.tag for p in parses):
        parses = [p for p in parses if gender in p.tag]
    # a declinable noun first ("мак" is also the indeclinable abbreviation МАК), then any noun
    if lang == "uk":   # its dictionary also lists common nouns as surnames, and animals as inanimate too
        return sorted(parses, key=lambda p: (p.tag.POS != "NOUN", "Fixd" in p.tag, "Abbr" in p.tag,
                                             "Surn" in p.tag or "Name" in p.tag or "Patr" in p.tag,
                                             "inan" in p.tag))[0]
    return sorted(parses, key=lambda p: (p.tag.POS != "NOUN", "Fixd" in p.tag, "Abbr" in p.tag))[0]


def _inanimate(head, lang: str) -> bool:
    """Whether the head noun reads as inanimate. A Russian plural the dictionary lists both ways under
    one lemma ("звёзды": stars, or celebrities — the animate reading scores higher) takes the animacy of
    that lemma's likeliest singular reading (the star), as the singular does."""
    if "inan" in head.tag or lang != "ru" or "plur" not in head.tag:
        return "inan" in head.tag
    both = {str(p.tag.animacy) for p in _morph(lang).parse(head.word)
            if p.normal_form == head.normal_form and p.tag.POS == "NOUN" and "nomn" in p.tag}
    if both != {"anim", "inan"}:
        return False
    singular = [p for p in _morph(lang).parse(head.normal_form)
                if p.normal_form == head.normal_form and p.tag.POS == "NOUN" and "nomn" in p.tag and "sing" in p.tag]
    return bool(singular) and "inan" in singular[0].tag


def inflect_phrase(phrase: str, case: str, strict: bool = True, lang: str = "ru") -> str:
    """Put every agreeing word of a nominative `phrase` into pymorphy3's `case` ('gent'), keeping each
    word's number; a word written with a leading '=' is a fixed complement and stays ('голова =крокодила').
    strict: a word with no nominative reading is an error; otherwise it stays as written ('iphone').
    The accusative follows the head noun (the last agreeing word), as in both languages: a feminine
    singular head declines ("червону зірку"); otherwise an inanimate head keeps the nominative ("красный
    круг", "дві червоні зірки") and an animate one takes the genitive ("серого кота", "двох котів")."""
    out, words = [], phrase.split(" ")
    agreeing = [i for i, w in enumerate(words) if w and not w.startswith("=")]
    parses = {i: _nominative_parse(words[i].lower(), lang, modifier=i != agreeing[-1]) for i in agreeing[:-1]}
    genders = {p.tag.gender for p in parses.values() if p is not None and p.tag.number != "plur"} - {None}
    head = (_nominative_parse(words[agreeing[-1]].lower(), lang, gender=next(iter(genders)) if len(genders) == 1
                              else None) if agreeing else None)
    parses[agreeing[-1] if agreeing else -1] = head
    if case == "accs" and head is not None and not ("femn" in head.tag and "plur" not in head.tag):
        if _inanimate(head, lang) or ("neut" in head.tag and "plur" not in head.tag):
            return " ".join(w[1:] if w.startswith("=") else w for w in words)
        if "anim" in head.tag:
            return inflect_phrase(phrase, "gent", strict, lang)
    for i, w in enumerate(words):
        if w.startswith("=") or not w:
            out.append(w[1:])
            continue
        p = parses[i]
        f = p.inflect({case} | ({p.tag.number} if p.tag.number else set())) if p is not None else None
        if f is None:
            if strict:
                raise ValueError(f"pymorphy3 cannot put {w!r} into {case}")
            out.append(w)
            continue
        out.append(f.word[0].upper() + f.word[1:] if w[0].isupper() else f.word)
    return " ".join(out)


def template_forms(templates: list[str]) -> set[str]:
    """The forms templates ask for: ['фото {gen}', '{nom}'] -> {'gen', 'nom'}."""
    return {f for t in templates for _, f, _, _ in string.Formatter().parse(t) if f}


def label_forms(label: str, lang: str, forms: set[str] | None = None) -> dict[str, str]:
    """{form: text} of a user's label, written in the nominative. Russian and Ukrainian: each case
    pymorphy3 knows (words it cannot read stay as written); other languages: the label itself for
    every form."""
    forms = set(forms or CASES) | {"nom"}
    if lang not in MORPH_LANGS:
        return {f: label for f in forms}
    return {f: label if f in ("nom", "c") or f not in CASES else inflect_phrase(label, CASES[f], False, lang)
            for f in forms}
