"""One small registry for every family of named things (study kinds, step kinds, backends,
selectors): lookups of unknown names fail with the known names and a "did you mean" hint."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .config import suggest
from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → item. ``what`` names the family in error messages ("study kind", ...)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T, *, replace: bool = False) -> T:
        """Register ``item`` under ``name``; registering a different item twice is an error
        (two modules claiming one name), re-registering the same one is a no-op."""
        old = self._items.get(name)
        if old is not None and old != item and not replace:
            raise ConfigError(f"{self.what} '{name}' is registered twice ({old!r} and {item!r}); "
                              "pick another name")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        def deco(item: T) -> T:
            return self.add(name, item)
        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.what} '{name}'{suggest(str(name), self._items)}; "
                              f"known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
