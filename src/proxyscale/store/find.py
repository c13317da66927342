"""Find one finished step of a store from what a user types: its key, a unique prefix of the
key or of its leaf, or its name (the leaf without the hash)."""
from __future__ import annotations

from ..errors import StoreError
from .layout import Store

_SHOWN = 8  # candidates named in a message; more are counted


def find_step(store: Store, kind: str, ref: str) -> str:
    """The key of the one finished ``kind`` step that ``ref`` names, or a one-line
    :class:`StoreError` listing the candidates (none, or several)."""
    keys = [k for k in store.finished_keys() if k.split("/", 1)[0] == kind]
    if not keys:
        raise StoreError(f"store {store.root} has no finished {kind} step; run a study that trains models "
                         "there first, or pass the store it ran in")
    ref = ref.strip().rstrip("/")
    exact = [k for k in keys if ref in (k, k.split("/", 1)[1])]
    hits = exact or [k for k in keys if _matches(k, ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise StoreError(f"no finished {kind} step of store {store.root} matches '{ref}'; "
                         f"give one of: {_listing(keys)}")
    raise StoreError(f"'{ref}' matches {len(hits)} {kind} steps of store {store.root}; give a longer prefix "
                     f"or the whole key: {_listing(hits)}")


def _matches(key: str, ref: str) -> bool:
    leaf = key.split("/", 1)[1]
    name = leaf.rsplit("-", 1)[0]
    return key.startswith(ref) or leaf.startswith(ref) or name == ref


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")
