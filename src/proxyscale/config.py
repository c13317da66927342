"""Typed configuration: frozen dataclasses that round-trip to YAML/JSON.

:func:`from_dict` builds a dataclass from plain data and rejects unknown keys with a
"did you mean" hint; :func:`to_dict` turns it back into plain data (what step hashes use).
This module imports neither torch nor ray.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}"
                              + suggest(str(value), map(str, get_args(tp))))
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = (get_args(tp) or (Any, Any))
        return {str(_convert(kt, k, where)): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    return _scalar(tp, value, where)


def convert_value(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked and converted to type ``tp`` (a ConfigError naming ``where`` if it cannot be)."""
    return _convert(tp, value, where)


def _scalar(tp: Any, value: Any, where: str) -> Any:
    """A number, integer, boolean or string of type ``tp`` (other types pass through)."""
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number; give a real value")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping, strictly: unknown keys and missing required
    keys are :class:`ConfigError` naming the path, e.g. ``study.ladder.sizes[2].d_modle``."""
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"{where}: unknown key '{key}'{suggest(str(key), fields)}; "
                              f"allowed keys: {', '.join(sorted(fields))}")
        kwargs[key] = _convert(hints[key], value, f"{where}.{key}")
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key '{name}'")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from e
    return obj


def to_dict(obj: Any) -> Any:
    """Plain JSON-able data (dicts, lists, scalars) from a dataclass tree.

    A field marked ``metadata={"omit_default": True}`` is left out while it holds its default,
    so adding such a field keeps the content hashes (and stores) of existing specs valid."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get("omit_default") and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def canonical_json(data: Any) -> str:
    """Sorted, compact JSON: the form that hashes are computed over."""
    return json.dumps(to_dict(data), sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(data: Any, length: int = 10) -> str:
    """Short sha256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:length]


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML says
    keys are unique; PyYAML would silently keep the last)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice in one mapping (first at line "
                    f"{seen[key].start_mark.line + 1}); keep one", key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with errors that name the file and line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file; pass the path of a YAML study spec (see configs/)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: broken YAML{at}: {problem}; fix the syntax and re-run") from e
    if data is None:
        raise ConfigError(f"{p}: the file is empty; write a study spec (see configs/demo.yaml)")
    return data


def dump_yaml(obj: Any) -> str:
    """YAML text of a dataclass tree (round-trips through :func:`from_dict`)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)
