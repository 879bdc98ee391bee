"""The command lines the documentation shows are ones langclip accepts: every `langclip ...` line in
README.md, docs/*.md, benchmarks/README.md and the `--help` examples parses with the CLI's own parser,
its key=value overrides name fields of the stage's config with values that read, and the configs and
scripts it names exist. (Nothing runs: a renamed flag, field or file is what this catches.)"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from conftest import cli_leaves

ROOT = Path(__file__).resolve().parents[1]
# the user's documents (docs/NOTES.md is the developers' log: it may name what was renamed since)
DOCS = [ROOT / "README.md", *sorted(f for f in (ROOT / "docs").glob("*.md") if f.name != "NOTES.md"),
        ROOT / "benchmarks" / "README.md"]
SHELL = {"", "bash", "sh", "shell", "console"}
# `langclip ...`, `python -m langclip ...` or `torchrun ... -m langclip ...`, after optional VAR=value
COMMAND = re.compile(r"(?:[A-Z_]+=\S+\s+)*(?:torchrun\s.*?-m\s+langclip|python3?\s+-m\s+langclip|langclip)\s+(.*)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
SCRIPT = re.compile(r"(?:python3?|bash)\s+(benchmarks/\S+\.(?:py|sh))")


def shell_lines(text: str) -> list[str]:
    """The lines of the text's shell code blocks (fenced, no language or a shell's), continuations joined."""
    out, lang, block = [], None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, block = line.strip()[3:].strip(), []
            else:
                if lang in SHELL:
                    out += "\n".join(block).replace("\\\n", " ").splitlines()
                lang = None
        elif lang is not None:
            block.append(line)
    assert lang is None, "a code block is not closed"
    return out


def commands(line: str) -> list[str]:
    """The langclip commands of one shell line (comments dropped, split at && ; |)."""
    line = re.split(r"(?:^|\s)#\s", line, maxsplit=1)[0]
    return [m.group(1).strip() for part in re.split(r"&&|\|\||;|\|", line)
            if (m := COMMAND.fullmatch(part.strip()))]


def documented() -> list[tuple[str, str]]:
    """(where, command) for every documented command: the docs' code blocks and the --help examples."""
    from langclip.cli import build_parser

    found = []
    for f in DOCS:
        text = f.read_text(encoding="utf-8")
        found += [(f"{f.relative_to(ROOT)}", c) for line in shell_lines(text) for c in commands(line)]
        # inline `langclip ...` in the prose: often a fragment, so only its subcommand and flags count
        found += [(f"{f.relative_to(ROOT)} (inline)", c + " ...") for m in INLINE.finditer(text)
                  for c in commands(m.group(1))]
    for name, p in cli_leaves(build_parser()):
        found += [(f"`langclip {name} --help`", c) for line in (p.epilog or "").splitlines() for c in commands(line)]
    return found


def config_class(leaf: str):
    from langclip import config

    return {"tokenizer train": config.TokenizerTrainConfig, "cache build": config.CacheConfig,
            "train": config.TrainConfig, "demo": config.DemoConfig, "index build": config.IndexConfig,
            "index update": config.IndexConfig}.get(leaf)


def problem(cmd: str) -> str | None:
    """Why langclip would refuse `cmd` before doing anything, or None."""
    from langclip.cli import build_parser
    from langclip.yamlconfig import ConfigError, load_config

    parser = build_parser()
    cmd = re.sub(r"\[([^\]]*)\]", r"\1", cmd)   # a synopsis' [optional] parts: checked as given
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        return f"not a shell line: {e}"
    if argv[:1] and argv[0].startswith("-"):   # the top level's own flags (-v, --help)
        known = {s for a in parser._actions for s in a.option_strings}
        unknown = [a for a in argv if a.startswith("-") and a not in known]
        return f"unknown flags {unknown}" if unknown else None
    leaf = " ".join(argv[:2]) if argv[:1] in (["tokenizer"], ["cache"], ["data"], ["index"]) else argv[0]
    sub = dict(cli_leaves(parser)).get(leaf)
    if sub is None:
        return f"no subcommand {leaf!r}"
    if "..." in argv or "…" in argv:   # elided: the flags it shows must exist
        known = {s for a in sub._actions for s in a.option_strings}
        unknown = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in known]
        return f"unknown flags {unknown}" if unknown else None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as e:
        return (err.getvalue().strip().splitlines() or ["--help"])[-1] if e.code else None
    cls, overrides = config_class(leaf), list(getattr(args, "overrides", None) or [])
    path = getattr(args, "config", None)
    if path and path.startswith("configs/"):
        if not (ROOT / path).is_file():
            return f"no config file {path}"
    else:
        path = None   # a user's file: its fields cannot be checked here
    if cls is not None and (overrides or path):
        try:
            load_config(cls, ROOT / path if path else None, overrides, validate=False)
        except ConfigError as e:
            return f"config: {e}"
    return None


def test_the_documented_commands_are_accepted():
    found = documented()
    where = {w.split()[0] for w, _ in found}
    assert {"README.md", "docs/recipe.md", "`langclip"} <= where and len(found) >= 80, (len(found), where)
    bad = [(w, c, why) for w, c in found if (why := problem(c))]
    assert not bad, "\n".join(f"{w}: langclip {c}\n    -> {why}" for w, c, why in bad)


def test_the_documented_scripts_exist():
    """Every `python benchmarks/X.py` or `bash benchmarks/X.sh` the docs name, in code blocks or inline."""
    scripts = {m.group(1) for f in DOCS for m in SCRIPT.finditer(f.read_text(encoding="utf-8"))}
    assert len(scripts) >= 10, scripts
    assert not [s for s in sorted(scripts) if not (ROOT / s).is_file()]


@pytest.mark.parametrize("cmd,why", [
    ("train --config configs/ru-vitb32-clip-init.yaml optim.lrr=1e-4", "lrr"),      # a misspelt field
    ("train --config configs/no-such.yaml", "no config file"),
    ("tokenizer train --lang ru --num-merges 32000 --out tok/", "unrecognized"),          # a renamed flag
    ("cache build --data x.tsv --clip ViT-B-32 --wieghts w.pt ... --out c/", "--wieghts"),
    ("index build --images photos/ --model runs/ru --out idx/ nprobe=eight", "nprobe"),
    ("serch --index idx/ кот", "no subcommand"),
])
def test_a_stale_command_is_caught(cmd, why):
    """The check itself: each of these is refused, and says why."""
    assert why in (problem(cmd) or ""), problem(cmd)


def test_the_readmes_python_runs(tmp_path, trained_run, ru_tokenizer, monkeypatch):
    """README's Python blocks run as written, from a folder holding what they name (tok/, demo/runs/clip
    and a demo picture), and give the shapes their comments promise."""
    import shutil

    from conftest import make_image

    ru_tokenizer.save(tmp_path / "tok")
    shutil.copytree(trained_run, tmp_path / "demo" / "runs" / "clip")
    (tmp_path / "demo" / "world" / "test").mkdir(parents=True)
    make_image(tmp_path / "demo" / "world" / "test" / "00000.png", 5, size=(64, 64))
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S | re.M)
    assert len(blocks) >= 2
    names: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md, Python block {i + 1}", "exec"), names)
    assert tuple(names["ids"].shape) == (2, 77) and tuple(names["probs"].shape) == (1, 2)
