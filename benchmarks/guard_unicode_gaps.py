"""The script guard against a newer Unicode: Python's `unicodedata` (Unicode 14 on Python 3.11) decides
which characters are a target script's, and unassigned code points count as gaps of a truncated UTF-8
character's range. The `regex` package carries newer tables (Unicode 16). For each guard of the 21
languages of `guard_languages.py` (their target scripts, from its result file), this lists the code
points that are unassigned for Python, assigned for `regex`, inside a range the guard takes for
all-target, and neither of a target script (by `regex`'s Script property, Han for CJK) nor inside the
target's blocks: characters a merge learned on such a range could reach without the target's letters.

    python benchmarks/guard_unicode_gaps.py > out.jsonl

One JSON line for the versions, then one per guard.
"""
import json
import sys
import unicodedata
from pathlib import Path

import regex

from langclip.tokenizer.scripts import ScriptGuard

RESULTS = Path(__file__).parent / "results" / "cpu_guard_languages.jsonl"
CN = regex.compile(r"\p{Cn}")


def truncated_ranges():
    """(lo, hi) of every truncated UTF-8 sequence short enough for the guard to look at."""
    for lead in range(0xC2, 0xE0):
        yield (lead & 0x1F) << 6, ((lead & 0x1F) << 6) + 63
    for lead in range(0xE0, 0xF0):
        yield (lead & 0xF) << 12, ((lead & 0xF) << 12) + 4095
        for c1 in range(0x80, 0xC0):
            lo = ((lead & 0xF) << 12) | ((c1 & 0x3F) << 6)
            yield lo, lo + 63
    for lead in range(0xF0, 0xF5):
        for c1 in range(0x80, 0xC0):
            lo = ((lead & 7) << 18) | ((c1 & 0x3F) << 12)
            if lo > 0x10FFFF:
                continue
            yield lo, lo + 4095
            for c2 in range(0x80, 0xC0):
                yield lo | ((c2 & 0x3F) << 6), (lo | ((c2 & 0x3F) << 6)) + 63


def of_target(cp: int, scripts: tuple[str, ...]) -> bool:
    names = ["Han" if s == "CJK" else s.title() for s in scripts]
    return any(regex.match(r"\p{Script=%s}" % n, chr(cp)) for n in names)


def main():
    guards = sorted({tuple(json.loads(line)["target_scripts"]) for line in RESULTS.open(encoding="utf-8")
                     if '"lang"' in line})
    print(json.dumps({"python": sys.version.split()[0], "python_unicode": unicodedata.unidata_version,
                      "regex": regex.__version__}), flush=True)
    for scripts in guards:
        g = ScriptGuard(list(scripts))
        found = {}
        for lo, hi in truncated_ranges():
            if not g._all_target(lo, hi):
                continue
            for cp in range(lo, min(hi, 0x10FFFF) + 1):
                c = chr(cp)
                if unicodedata.category(c) == "Cn" and not CN.match(c) and not of_target(cp, scripts) \
                        and not g._in_blocks(cp):
                    found[f"U+{cp:04X}"] = f"{lo:04X}-{hi:04X}"
        print(json.dumps({"target_scripts": list(scripts), "newer_characters_of_other_scripts": found}),
              flush=True)


if __name__ == "__main__":
    main()
