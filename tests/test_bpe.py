import random
from collections import Counter

from langclip.tokenizer.bpe import learn_merges


def naive_bpe(words, num_merges, existing):
    """Reference: recount every pair from scratch after each merge."""
    words = [(list(w), c) for w, c in words]
    known, merges = set(existing), []
    banned = set()
    while len(merges) < num_merges:
        stats = Counter()
        for w, c in words:
            for p in zip(w, w[1:]):
                stats[p] += c
        cands = [(-n, p) for p, n in stats.items() if n > 0 and p not in banned]
        if not cands:
            break
        _, best = min(cands)
        if "".join(best) in known:
            banned.add(best)
            continue
        known.add("".join(best))
        merges.append(best)
        for i, (w, c) in enumerate(words):
            out, j = [], 0
            while j < len(w):
                if j < len(w) - 1 and (w[j], w[j + 1]) == best:
                    out.append(w[j] + w[j + 1])
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = (out, c)
    return merges


def test_hand_checkable_example():
    res = learn_merges([(["a", "a", "a", "b"], 3), (["a", "b"], 1)], 3, existing_tokens={"a", "b"})
    # (a,a)=6 first; then (a,b)=4 beats (aa,a)=3; then (aa,ab)=3
    assert res.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert res.pair_counts == [6, 4, 3]


def test_matches_naive_reference_on_random_corpus():
    rng = random.Random(0)
    alphabet = "abcde"
    words = [([rng.choice(alphabet) for _ in range(rng.randint(1, 9))], rng.randint(1, 50)) for _ in range(300)]
    words.append((["a", "b"], 1000))  # (a,b) is frequent but "ab" exists already: must be skipped
    fast = learn_merges(words, 60, existing_tokens=set(alphabet) | {"ab"})
    slow = naive_bpe(words, 60, set(alphabet) | {"ab"})
    # ties may be broken differently only when counts are equal; compare merge-by-merge counts strictly
    assert [m for m in fast.merges] == slow
    assert ("a", "b") not in fast.merges and fast.skipped_existing >= 1


def test_exhausted_corpus_reports_it():
    res = learn_merges([(["x", "y"], 5)], 10, existing_tokens={"x", "y"})
    assert res.merges == [("x", "y")] and res.exhausted


def test_protected_pairs_are_never_learned():
    """{"aaxb": 3, "ab": 5} with 'a' and 'b' protected: (a,a) and (a,b), the most frequent pairs, are
    never learned; (a,x) -> 'ax', then ('a','ax') and ('ax','b') tie at 3 (ties go by the pieces'
    strings: 'a' < 'ax') -> 'aax', then ('aax','b'), and nothing is left."""
    res = learn_merges([(list("aaxb"), 3), (list("ab"), 5)], 10, {"a", "b", "x"}, protected=lambda s: s in ("a", "b"))
    assert res.protected_pairs == 2 and res.exhausted
    assert res.merges == [("a", "x"), ("a", "ax"), ("aax", "b")]


def test_script_guard_examples():
    from langclip.tokenizer import bytes_to_unicode
    from langclip.tokenizer.train import ScriptGuard

    u = bytes_to_unicode()
    enc = lambda s: "".join(u[b] for b in s.encode())   # noqa: E731
    g = ScriptGuard(["CYRILLIC"])
    for s in ("lad", "xviii", "é", "😀", "北", "'s", "«"):   # could be cut from text without Cyrillic
        assert g.protected(enc(s)) and g.protected(enc(s) + "</w>"), s
    for s in ("п", "пр", "aп", "п1"):                         # holds a Cyrillic character
        assert not g.protected(enc(s)), s
    assert not g.protected(u[0xD0])      # a lead byte only Cyrillic characters begin with
    assert g.protected(u[0xBF])          # a continuation byte: any character may end so
    greek = ScriptGuard(["GREEK"])
    assert not greek.protected(u[0xCE]) and not greek.protected(u[0xCF]) and greek.protected(enc("lad"))
    latin = ScriptGuard(["LATIN"])       # a Latin-script language: its non-ASCII letters
    assert latin.protected(enc("lad")) and not latin.protected(enc("ł")) and not latin.protected(enc("ä"))
