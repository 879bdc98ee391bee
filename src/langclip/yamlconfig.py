"""The configuration loader every stage uses: a YAML file plus `key.sub=value` command-line overrides
into nested dataclasses, each value coerced to its field's type. An unknown key or a value of the wrong
type is an error naming the key and where it came from (the file and line, or the override as typed),
raised before any work starts. The stages' dataclasses are in config.py.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration error; `key`: the dotted key it is about ("optim.lr", "corpus[1]"), when known."""

    def __init__(self, msg: str, key: str | None = None):
        super().__init__(msg)
        self.key = key


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}", where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", where)
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}", where)
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", where)
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {list(args)}, got {value!r}", where)
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}", where)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}", where)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else int(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected an integer, got {value!r}", where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}", where)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}", where)
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"{where}." if where else ""
        import difflib

        near = difflib.get_close_matches(str(unknown[0]), names, n=1, cutoff=0.5)
        hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]!r}{hint}; known keys: {', '.join(sorted(names))}",
                          f"{prefix}{unknown[0]}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    obj = cls(**kwargs)
    return obj


def _where(e: ConfigError, path, text: str | None, given: dict) -> str:
    """The error with where its value came from: the command line's key=value, or the file and line."""
    key = e.key or ""
    for k, ov in given.items():
        if key == k or key.startswith((k + ".", k + "[")):
            return f"command line {ov!r}: {e}"
    line = _yaml_line(text, key) if text and key else None
    if path:
        return f"{path}, line {line}: {e}" if line else f"{path}: {e}"
    return str(e)


def _yaml_line(text: str, key: str) -> int | None:
    """The 1-based line of a dotted key ("optim.lr", "corpus[1]") in a YAML text (its composed nodes:
    nothing is constructed), or None where the key is not in the text."""
    import re

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", key):
        if name and isinstance(node, yaml.MappingNode):
            hit = next(((k, v) for k, v in node.value if k.value == name), None)
            if hit is None:
                return line
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _set_path(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                validate: bool = True, base: dict | None = None) -> T:
    """Build `cls` from a YAML file and `key=value` overrides (values parsed as YAML scalars);
    `validate=False` reads it without checking that the files it names exist. `base`: values set
    before the file (a command's flags); the file and the overrides win over them."""
    data: dict = dict(base or {})
    text = None
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        text = p.read_text(encoding="utf-8")
        try:
            from_file = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from None
        if not isinstance(from_file, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        data.update(from_file)
    given = {}
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r}: expected key=value, e.g. optim.lr=1e-4")
        k, v = ov.split("=", 1)
        k = k.strip().lstrip("-").replace("-", "_")
        given[k] = ov
        try:
            value = yaml.safe_load(v) if v != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {ov!r}: invalid value ({str(e).splitlines()[0]})") from None
        _set_path(data, k, value)
    try:
        cfg = from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(_where(e, path, text, given), e.key) from None
    check = getattr(cfg, "validate", None)
    if validate and callable(check):
        try:
            check()
        except ConfigError as e:
            if not e.key:
                raise
            raise ConfigError(_where(e, path, text, given), e.key) from None
    return cfg
