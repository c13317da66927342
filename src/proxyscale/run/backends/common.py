"""What every remote backend does when a batch comes back with no answer."""
from __future__ import annotations

from typing import Any

from ...store import Store


def fail_batch(payloads: list[dict[str, Any]], store_root: str, reason: str) -> list[dict[str, Any]]:
    """Results for a batch whose worker gave no answer: its unfinished steps recorded failed in the
    store with ``reason`` (one line), those it finished before reported done, and those a live
    process still holds (another runner's) reported busy and left alone."""
    store = Store(store_root)
    out: list[dict[str, Any]] = []
    for p in payloads:
        claim = store.claim(p["key"])
        if claim is not None:
            store.fail(claim, reason)
            out.append({"key": p["key"], "state": "failed", "reason": reason})
        elif store.is_done(p["key"]):
            out.append({"key": p["key"], "state": "done", "skipped": True})
        else:
            out.append({"key": p["key"], "state": "busy"})
    return out
