"""The registered selection methods as the user meets them: each one's settings with their types
and defaults (``proxyscale select --list-methods`` and ``--help``, read off the registry), and
building a method from ``--set`` pairs with errors that list the valid keys."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from ..config import convert_value, suggest
from ..errors import ConfigError
from .base import SELECTORS, Selector

HIDDEN = ("name",)  # a field every method has; chosen by --method, not --set


def settings_of(method: str) -> list[dataclasses.Field]:
    """The settings (dataclass fields) of a registered method, in declaration order."""
    factory = SELECTORS.get(method)
    if not dataclasses.is_dataclass(factory):
        raise ConfigError(f"selection method '{method}' is not a settings dataclass; register a dataclass")
    return [f for f in dataclasses.fields(factory) if f.init and f.name not in HIDDEN]


def defaults_of(method: str) -> dict[str, Any]:
    """Every setting of ``method`` and its default."""
    return {f.name: f.default for f in settings_of(method)}


def summary_of(method: str) -> str:
    """The first line of the method's docstring."""
    doc = (SELECTORS.get(method).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def describe_methods(sep: str = "\n") -> str:
    """Every registered method: its summary, then one line per setting ``name: type = default``."""
    blocks = []
    for method in SELECTORS.names():
        lines = [f"{method}: {summary_of(method)}"]
        lines += [f"  --set {f.name}=…  ({_type_name(f.type)}, default {f.default!r})" for f in settings_of(method)]
        blocks.append(sep.join(lines))
    return (sep * 2).join(blocks)


def _type_name(tp: Any) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return text.replace("typing.", "")


def build(method: str, settings: Mapping[str, Any], flag: Optional[str] = None) -> Selector:
    """A method with ``settings`` (unknown keys and ill-typed values are one ConfigError each).
    ``flag``: how the user gave them (``"--set"``), so that the error names it."""
    fields = {f.name: f for f in settings_of(method)}
    where = flag or f"{method} settings"
    from typing import get_type_hints

    hints = get_type_hints(SELECTORS.get(method))
    kwargs = {}
    for key, value in settings.items():
        if key not in fields:
            valid = ", ".join(fields) or "none"
            raise ConfigError(f"{where} {key}: --method {method} has no setting '{key}'{suggest(str(key), fields)}; "
                              f"valid: {valid} (`proxyscale select --list-methods` shows types and defaults)"
                              if flag else f"{where}: unknown key '{key}'{suggest(str(key), fields)}; "
                              f"allowed keys: {', '.join(sorted(fields))}")
        kwargs[key] = convert_value(hints[key], value, f"{flag} {key}" if flag else f"{where}.{key}")
    try:
        return SELECTORS.get(method)(**kwargs)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where}: {e}") from None
