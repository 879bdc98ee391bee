"""Which tokens a run's training captions held (coverage.py): counted by `train` into the run folder, and the
words of a query whose tokens they never held named by predict, similarity, encode, search and serve."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_image
from langclip.cli import main
from langclip.coverage import COUNTS_FILE, count_tokens, load_counts, save_counts, summary, unseen_words


def test_a_runs_token_counts_are_its_training_captions_counted_by_hand(trained_run):
    """The counts `train` kept equal a count over the training split's captions made here, one caption at a
    time with the tokenizer's plain encode: start, ids cut to the context, end (the held-out images' captions
    are not counted)."""
    import yaml

    from langclip.cache import load_cache, read_captions
    from langclip.runfolder import split_by_image
    from langclip.tokenizer import Tokenizer

    run = Path(trained_run)
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    ctx = json.loads((run / "model.json").read_text(encoding="utf-8"))["model_cfg"]["text_cfg"]["context_length"]
    tok = Tokenizer.load(run / "tokenizer")
    data = load_cache(cfg["cache"], texts=False)
    train_idx, val_idx = split_by_image(data, cfg["val_fraction"], cfg["seed"])
    assert len(val_idx) > 0
    want = Counter()
    for c in read_captions(cfg["cache"], data.caption_rows[train_idx], "caption"):
        want.update([tok.sot_token_id, *tok.encode(c)[:ctx - 2], tok.eot_token_id])
    got = load_counts(run)
    assert got.shape == (tok.vocab_size,) and got.dtype == np.int64
    assert {i: int(n) for i, n in enumerate(got) if n} == dict(want)
    from safetensors import safe_open

    with safe_open(str(run / COUNTS_FILE), "np") as f:   # what was counted, and with which tokenizer
        assert f.metadata() == {"tokenizer": tok.digest(), "tables": "caption", "split": "train", "pretrained": "clip"}
    # a held-out caption's word that no training caption holds is named (its tokens were not counted)
    held = read_captions(cfg["cache"], data.caption_rows[val_idx], "caption")
    seen = {w for c in read_captions(cfg["cache"], data.caption_rows[train_idx], "caption") for w in c.split()}
    assert not unseen_words(run, tok, sorted(seen))   # every word of the training captions is known
    only_held = {w for c in held for w in c.split()} - seen
    for w in only_held:   # a word only in held-out captions is named, unless all its pieces occur elsewhere
        pieces = tok.encode(w)
        assert (w in unseen_words(run, tok, [w])) == any(want[i] == 0 for i in pieces), w


@pytest.mark.slow
def test_unseen_words_with_the_real_32k_tokenizer(tmp_path, ru_tokenizer_32k):
    """With the README's 32k Russian tokenizer: words of the training captions are never named, words only in
    held-out captions or in none are, with their untrained tokens; the summary counts the added tokens used."""
    from langclip.train.batches import TokenTable

    tok = ru_tokenizer_32k
    train = ["две красные звезды на синем фоне", "кот спит на диване", "фото собаки в парке"]
    held = ["жираф ест листья"]
    table = TokenTable.encode(tok, train + held, 77)
    counts = count_tokens([table], torch.tensor([3]), tok.vocab_size)
    save_counts(tmp_path, counts, tok.digest(), ["caption"])
    by_hand = Counter(i for c in train for i in [tok.sot_token_id, *tok.encode(c), tok.eot_token_id])
    assert {i: int(n) for i, n in enumerate(counts) if n} == dict(by_hand)
    bad = unseen_words(tmp_path, tok, ["кот на диване", "жираф в парке", "бурундук"])
    assert set(bad) == {"жираф", "бурундук"}, bad
    assert "".join(bad["бурундук"]) == "бурундук"   # one or more pieces, none of them in the captions
    s = summary(counts, tok.num_added_merges)
    new = {i for i in by_hand if 49406 <= i < 49406 + tok.num_added_merges}
    assert s["tokens_seen"] == len(by_hand) and s["new_tokens_seen"] == len(new) > 5 and s["new_tokens"] == 32000
    assert unseen_words(tmp_path / "nowhere", tok, ["бурундук"]) == {}   # a folder without counts: no note
    # what the tower knew before its captions: English words in CLIP's own pieces under `clip` init, every id of
    # an `hf:` encoder, nothing under `scratch`; CLIP's pieces of another script's bytes are no language's, and
    # those spelling the run's own language's words (a Spanish run's "rojas") were never trained for it
    import copy

    es = copy.copy(tok)
    es.meta = dict(tok.meta, language="es")
    words = ["giraffe", "жираф", "ꙮ", "кот", "rojas"]
    for kind, want, want_es in (("", {"giraffe", "жираф", "ꙮ", "rojas"}, {"giraffe", "жираф", "ꙮ", "rojas"}),
                                ("clip", {"жираф", "ꙮ"}, {"жираф", "ꙮ", "rojas"}), ("all", set(), set())):
        save_counts(tmp_path, counts, tok.digest(), ["caption"], kind)
        assert set(unseen_words(tmp_path, tok, words)) == want, kind
        assert set(unseen_words(tmp_path, es, words)) == want_es, kind


def test_the_commands_name_words_the_run_never_trained_on(trained_run, tmp_path, capsys, tiny_arch, tiny_clip):
    """predict, similarity, encode and search print one note naming the words; known words are not named;
    the open_clip and transformers exports keep the counts; `info` reports the coverage."""
    from langclip.config import IndexConfig
    from langclip.search import build_index

    run = str(trained_run)
    img = tmp_path / "a.png"
    make_image(img, 1)
    odd = "ꙮꙮ"   # U+A66E, in no caption of the world
    assert main(["predict", "--model", run, "--image", str(img), "--labels", f"красный круг,{odd} круг,giraffe"]) == 0
    err = capsys.readouterr().err
    assert f"«{odd}»" in err and "«красный»" not in err and "«круг»" not in err and run in err
    assert "giraffe" not in err   # no caption said it, but a `clip` init's English ids are CLIP's own
    assert main(["similarity", "--model", run, "--images", str(img), "--texts", odd, "--out",
                 str(tmp_path / "s.png")]) == 0
    assert f"«{odd}»" in capsys.readouterr().err
    assert main(["encode", "--model", run, "--texts", "красный круг", odd, "--out", str(tmp_path / "e.npy")]) == 0
    assert capsys.readouterr().err.count(f"«{odd}»") == 1
    build_index(IndexConfig(data=[str(tmp_path)], out=str(tmp_path / "idx"), clip=tiny_arch, weights=tiny_clip[1],
                            workers=0), progress=False)
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", run, f"{odd} круг", "-k", "1"]) == 0
    assert f"«{odd}»" in capsys.readouterr().err
    assert main(["search", "--index", str(tmp_path / "idx"), "--model", run, "красный круг", "-k", "1"]) == 0
    assert "note:" not in capsys.readouterr().err
    for fmt in ("open_clip", "hf"):   # the exports langclip loads carry the counts; CLIP's own file has none
        assert main(["export", "--model", run, "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
        capsys.readouterr()
        assert main(["predict", "--model", str(tmp_path / fmt), "--image", str(img), "--labels", f"круг,{odd}"]) == 0
        assert f"«{odd}»" in capsys.readouterr().err
        card = (tmp_path / fmt / "README.md").read_text(encoding="utf-8")   # the model card says it too
        assert main(["info", str(tmp_path / fmt)]) == 0                       # and info
        assert "tokens       the training captions use" in capsys.readouterr().out
        assert f"- The training captions use {int((load_counts(run) > 0).sum()):,} of the tokenizer's 50,908 tokens" in card
    assert main(["info", run, "--json"]) == 0
    tokens = json.loads(capsys.readouterr().out)["items"][0]["tokens"]
    counts = load_counts(run)
    assert tokens["tokens_seen"] == int((counts > 0).sum()) and tokens["new_tokens"] == 1500


def test_a_word_never_trained_on_is_searched_as_a_form_the_captions_held(trained_run, tmp_path, capsys, tiny_arch,
                                                                         tiny_clip):
    """Russian: a query word whose tokens no training caption held is searched as a form of the same word
    (pymorphy3's lexeme) whose tokens all occurred, sharing its number or case; Spanish (simplemma): as its
    dictionary form where that was trained; a language with neither (Japanese) is never rewritten; `--as-typed`
    and the API's `as_typed` keep the query."""
    import shutil

    import pymorphy3

    from langclip.config import IndexConfig
    from langclip.coverage import rewrite
    from langclip.search import build_index
    from langclip.tokenizer import Tokenizer

    run = shutil.copytree(trained_run, tmp_path / "run")
    tok = Tokenizer.load(run / "tokenizer")
    zero = set(tok.encode("красные")) - set(tok.encode("красный"))   # «красные» untrained, «красный» not
    assert zero
    counts = np.ones(tok.vocab_size, dtype=np.int64)
    counts[sorted(zero)] = 0
    save_counts(run, counts, tok.digest(), ["caption"])
    text, subs = rewrite(run, tok, "две красные звезды", "ru")
    lexeme = {f.word: f.tag for f in pymorphy3.MorphAnalyzer(lang="ru").parse("красные")[0].lexeme}
    form = subs["красные"]
    assert form in lexeme and not set(tok.encode(form)) & zero and text == f"две {form} звезды"
    assert {"plur", "nomn"} & {lexeme[form].number, lexeme[form].case}
    assert rewrite(run, tok, "dos estrellas rojas", "es") == ("dos estrellas rojas", {})   # every token trained
    rojas = set(tok.encode("rojas")) - set(tok.encode("rojo"))
    assert rojas
    es = counts.copy()
    es[sorted(rojas)] = 0
    save_counts(run, es, tok.digest(), ["caption"])
    assert rewrite(run, tok, "dos estrellas rojas", "es") == ("dos estrellas rojo", {"rojas": "rojo"})
    assert rewrite(run, tok, "dos estrellas rojas", "ja") == ("dos estrellas rojas", {})   # no lemmas for ja
    es[sorted(set(tok.encode("rojo")))] = 0   # the dictionary form untrained too: nothing to search instead
    save_counts(run, es, tok.digest(), ["caption"])
    assert rewrite(run, tok, "dos estrellas rojas", "es") == ("dos estrellas rojas", {})
    save_counts(run, counts, tok.digest(), ["caption"])
    assert rewrite(run, tok, "две красные звезды", None) == ("две красные звезды", {})
    img = tmp_path / "pics" / "a.png"
    img.parent.mkdir()
    make_image(img, 1)
    build_index(IndexConfig(data=[str(img.parent)], out=str(tmp_path / "idx"), clip=tiny_arch, weights=tiny_clip[1],
                            workers=0), progress=False)
    args = ["search", "--index", str(tmp_path / "idx"), "--model", str(run), "Две красные звезды", "-k", "1"]
    assert main(args) == 0
    assert f"note: searched as «Две {form} звезды»: «красные» → «{form}»" in capsys.readouterr().err
    assert main(args + ["--as-typed"]) == 0
    err = capsys.readouterr().err
    assert "searched as" not in err and "«красные» (token" in err
    assert main(["predict", "--model", str(run), "--image", str(img), "--labels", "красные звезды,круг"]) == 0
    assert f"; trained form «{form}»)" in capsys.readouterr().err   # named where the labels are the user's to fix
    from fastapi.testclient import TestClient

    from langclip.search import Index, QueryModel
    from langclip.search.server import create_app

    c = TestClient(create_app(Index(tmp_path / "idx"), QueryModel(run)))
    r = c.get("/api/search", params={"q": "две красные звезды", "k": 1}).json()
    assert r["searched"] == f"две {form} звезды" and r["rewritten"] == {"красные": form} and "красные" in r["unseen"]
    r = c.get("/api/search", params={"q": "две красные звезды", "k": 1, "as_typed": True}).json()
    assert r["searched"] == "две красные звезды" and r["rewritten"] == {}
