"""Typed configs: dataclasses loaded from YAML, overridden by `a.b=value` arguments.

Every job's config is a tree of dataclasses. Loading is strict on purpose: a misspelt key
in a YAML file or on the command line is an error naming the full dotted key, because a
silently ignored `watertight.resolutoin=512` costs a cluster-day.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit the config dataclass."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} fits none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp}")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict; unknown keys raise ConfigError naming them."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        full = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {full} (known under {prefix or 'top level'}: {sorted(names)})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), the inverse of from_dict."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {p} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(arg: str) -> tuple[str, Any]:
    """`a.b=value` -> ("a.b", value) with the value read as YAML (numbers, bools, lists)."""
    if "=" not in arg:
        raise ConfigError(f"override {arg!r} is not of the form key=value")
    key, raw = arg.split("=", 1)
    if not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {arg!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Defaults of `cls`, then the YAML file, then the overrides; validated as a whole."""
    tree = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        # Check the file's own keys first so the error names the file.
        try:
            from_dict(cls, _merge(to_dict(cls()), loaded))
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        tree = _merge(tree, loaded)
    for arg in overrides:
        key, value = parse_override(arg)
        _set_dotted(tree, key, value)
    return from_dict(cls, tree)


def apply(cfg: T, overrides: list[str]) -> T:
    """A copy of config `cfg` with dotted `a.b=value` overrides applied, validated like `load`."""
    tree = to_dict(cfg)
    for arg in overrides:
        key, value = parse_override(arg)
        _set_dotted(tree, key, value)
    return from_dict(type(cfg), tree)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# dataclasses.field metadata of a config field added after digests of its config were stored
# (ablation journals, a dataset's config digest, an evaluation protocol): at its default, which must
# be the behaviour from before the field existed, `content` and `digest` leave it out, so adding
# the field redoes nothing already done. `model/` spells it `metadata={"later": True}` (it does not
# import jobs); elsewhere `later(default)`.
LATER = "later"


def later(default: Any) -> Any:
    return dataclasses.field(default=default, metadata={LATER: True})


def content(tree: Any) -> Any:
    """What a digest covers: `to_dict` of every dataclass in `tree` (nested in lists and dicts too),
    without the `later` fields that are at their default."""
    def strip(x: Any) -> Any:
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return {f.name: strip(getattr(x, f.name)) for f in dataclasses.fields(x)
                    if not (f.metadata.get(LATER) and getattr(x, f.name) == f.default)}
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()}
        return [strip(v) for v in x] if isinstance(x, (list, tuple)) else x

    return json.loads(json.dumps(strip(tree)))


def digest(tree: Any) -> str:
    """sha256 of the canonical JSON of a config (dataclasses, dicts and lists of them) by `content`."""
    return hashlib.sha256(json.dumps(content(tree), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}, e.g. for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def key_comments(cls: type, prefix: str = "") -> dict[str, str]:
    """{dotted key: its comment in the dataclass source} for a config tree: the comment at the end
    of a field's line, else the comment lines right above it. What `--help` shows beside each key,
    so the explanation lives in one place, next to the field. Inherited fields (a job config that
    extends a library's) keep the comments of the class that defines them."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            out.update(_own_key_comments(klass, prefix))
    return out


def _own_key_comments(cls: type, prefix: str) -> dict[str, str]:
    import ast
    import inspect
    import io
    import textwrap
    import tokenize

    out: dict[str, str] = {}
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined where no source is kept
        return out
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(src).readline) if tok.type == tokenize.COMMENT}
    lines = src.splitlines()
    hints = typing.get_type_hints(cls)
    for node in ast.parse(src).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        name = node.target.id
        key = f"{prefix}{name}"
        text = comments.get(node.lineno, "")
        if not text:  # a block of comment lines right above the field
            above, k = [], node.lineno - 1
            while k >= 1 and lines[k - 1].strip().startswith("#"):
                above.insert(0, comments.get(k, ""))
                k -= 1
            text = " ".join(above)
        if text:
            out[key] = text
        tp = hints.get(name)
        if dataclasses.is_dataclass(tp):
            out.update(key_comments(tp, key + "."))
    return out


def cli(cls: type[T], argv: list[str] | None, description: str) -> T:
    """`--config FILE [key=value ...]` -> a validated config; exits with status 2 on a bad key."""
    notes = key_comments(cls)
    defaults = "\n".join(f"  {k} = {v!r}" + (f"\n      {notes[k]}" if k in notes else "")
                         for k, v in flatten(to_dict(cls())).items())
    parser = argparse.ArgumentParser(
        description=description,
        epilog=f"config keys and their defaults:\n{defaults}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config file (keys of the config dataclass)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. output.path=/data/ds")
    args = parser.parse_args(argv)
    try:
        return load(cls, args.config, args.overrides)
    except ConfigError as e:
        parser.error(str(e))
        raise  # unreachable: parser.error exits


_REPO = Path(__file__).resolve().parents[1]


def raised_by_us(e: BaseException) -> bool:
    """Whether `e` comes from a `raise` statement in this repository's code (not from a library,
    Python or compiled): then it is an error the job raised on purpose, meant for the user."""
    import linecache

    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    path = Path(tb.tb_frame.f_code.co_filename).resolve()
    ours = path.is_relative_to(_REPO) and not any(part.startswith(".venv") or part == "site-packages"
                                                  for part in path.relative_to(_REPO).parts)
    # A compiled function (numpy's reshape) raises from inside the calling line, which is ours.
    return ours and linecache.getline(str(path), tb.tb_lineno).lstrip().startswith("raise")


def run_job(main, cls: type[T], doc: str, argv: list[str] | None = None) -> None:
    """A job's `__main__`: logging, `cli`, then `main(cfg)`; exit 1 with the message when the job
    cannot run (missing input, unwritable output, a bad value), 2 on a bad config key. A
    ValueError/OSError raised inside a library (numpy, torch, pyarrow...) is a bug, not bad input:
    it exits 1 too, but with its traceback."""
    import logging
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = cli(cls, sys.argv[1:] if argv is None else argv, doc.strip().splitlines()[0])
    try:
        main(cfg)
    except (FileNotFoundError, PermissionError, ValueError) as e:
        if raised_by_us(e):
            logging.getLogger("shapegen4d").error("%s", e)
            print(f"error: {e}", file=sys.stderr)
        else:
            import traceback

            traceback.print_exc()
            print(f"error: unexpected {type(e).__name__} inside a library (a bug, not your input: please report it "
                  "with the traceback above)", file=sys.stderr)
        sys.exit(1)
