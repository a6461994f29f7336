"""The one config mechanism: dataclass defaults < YAML file < `key=value` dot-list overrides,
every value type-checked against the dataclass's annotations, unknown keys an error (STYLE 1;
lingua's recipe). The run config (grid/config.py) and the evaluation command (grid/evaluate.py)
both use it.

    cfg = apply_dotlist(EvalConfig(), ["t2i_images=1000", "benchmarks=text,fid"], what="eval")

Why not omegaconf (lingua's choice, formerly declared here and never imported): tried, 2.4.0
takes the dataclasses as structured configs but refuses `D=2e6` for an int field ("could not
be converted to Integer"; the sweeps and the README write budgets that way), its errors run
over several lines, and its DictConfig must be converted back to the dataclasses the code
passes around. Wrapping those would cost about what `_coerce` does; PyYAML (declared) reads
the files.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config problem, with a one-line message (unknown key, wrong type, bad value, bad file)."""


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """value (from YAML, a dot-list string, or Python) as type tp, or a one-line TypeError.
    Strings are parsed for numeric and bool fields: PyYAML reads `1e-4` as a string."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    bad = TypeError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if isinstance(value, str):  # "[a, b]" (YAML) or "a,b"
            parsed = yaml.safe_load(value)
            value = parsed if isinstance(parsed, list) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise bad
        elems = args if args[-1] is not Ellipsis else (args[0],) * len(value)
        return tuple(_coerce(v, t, key) for v, t in zip(value, elems))
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        try:
            value = float(value) if tp is float else (int(value) if value.lstrip("+-").isdigit() else float(value))
        except ValueError:
            raise bad from None
    if tp is float and isinstance(value, (int, float)):
        return float(value)
    if tp is int and isinstance(value, (int, float)) and float(value).is_integer():
        return int(value)  # "2e6" is a fine D
    raise bad


def merge(obj: Any, updates: dict, what: str = "config", prefix: str = "") -> Any:
    """A copy of dataclass obj with the nested dict updates applied, every value type-checked;
    KeyError / TypeError with a one-line message."""
    if not isinstance(updates, dict):
        raise TypeError(f"{prefix.rstrip('.') or what}: expected a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    changes = {}
    for key, value in updates.items():
        if key not in names:
            where = f"at '{prefix.rstrip('.')}'" if prefix else "at the top level"
            raise KeyError(f"unknown {what} key '{prefix}{key}'; valid keys {where}: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, what, f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return dataclasses.replace(obj, **changes)


def dotlist(overrides: list[str]) -> dict:
    """['optim.lr=1e-4', 'size=cpu-2.7M'] -> {'optim': {'lr': '1e-4'}, 'size': 'cpu-2.7M'}."""
    out: dict = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not key=value")
        *parents, leaf = key.strip().split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r} conflicts with an earlier one")
        node[leaf] = value.strip()
    return out


def apply_dotlist(obj: Any, overrides: list[str], what: str = "config") -> Any:
    """obj with `key=value` overrides applied and validated (obj.validate()); ConfigError."""
    try:
        obj = merge(obj, dotlist(list(overrides)), what)
        obj.validate()
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(e.args[0] if e.args else str(e)) from None
    return obj


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file; ConfigError naming the file for a missing, unparsable or
    non-mapping file."""
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def to_dict(obj: Any) -> dict:
    """Plain nested dict (tuples as lists), as written to YAML and hashed."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))
