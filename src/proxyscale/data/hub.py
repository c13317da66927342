"""Raw records from the Hugging Face hub (or local files through a ``datasets`` builder).

This is the only module that imports ``datasets`` (an optional extra, imported lazily). It
sits below both readers of hub data, :mod:`~proxyscale.data.sources` (hub datasets as
training documents) and :mod:`~proxyscale.data.hf` (the paper's test sets), so neither has to
import the other.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional

from ..errors import DataError


def hf_records(path: str, name: Optional[str], split: str, *, data_files: Optional[str] = None,
               streaming: bool = True, revision: Optional[str] = None,
               fix: str = "Offline? Point path='json' or 'parquet' and data_files at local copies") -> Iterator[dict]:
    """Records of a hub dataset (or of local files through a builder such as ``"json"``), at
    ``revision`` (a branch, tag or commit; ``None``: the default branch). ``fix`` ends the error
    line: what the caller's user should check (their flags or their spec keys)."""
    try:
        import datasets
    except ImportError:
        raise DataError("reading Hugging Face datasets needs the optional extra: "
                        "pip install 'proxyscale[hf]'") from None
    kwargs: dict[str, Any] = {"split": split, "streaming": streaming}
    if data_files is not None:
        kwargs["data_files"] = data_files
    if revision is not None:
        kwargs["revision"] = revision
    try:
        ds = datasets.load_dataset(path, name, **kwargs)
        yield from ds
    except Exception as e:  # datasets raises many types (network, schema, missing split)
        at = f", revision {revision}" if revision is not None else ""
        what = " ".join(str(e).split())  # one line, whatever the library wrote
        raise DataError(f"could not read dataset {path} ({name}, split {split}{at}): {type(e).__name__}: {what}. "
                        f"{fix}") from None
