"""Analysis results on disk: the one format every study kind's analysis step writes.

A directory holds ``<name>.parquet`` per table, ``<name>.npy`` per array and, written last, a
versioned ``analysis.json`` manifest naming the study kind, the tables, the arrays and a
free JSON ``meta`` record (settings and small results). A directory with a manifest is complete.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from ..errors import StoreError
from ..store import read_json, read_table, write_json, write_npy, write_table

FORMAT_VERSION = 2
MANIFEST = "analysis.json"
_LEGACY_MANIFESTS = ("attribution.json",)  # format 1 of the attribution analysis
_RERUN = "re-run the analysis step (delete its step directory or run the study with a fresh store)"


@dataclass(frozen=True, eq=False)
class Analysis(Mapping[str, pd.DataFrame]):
    """What :func:`read_analysis` returns; as a mapping it is the tables (name → DataFrame)."""

    kind: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def __len__(self) -> int:
        return len(self.tables)


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise StoreError(f"analysis {what} name {name!r} must be a plain file stem (no '/', no leading '.')")
    return name


def write_analysis(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *, kind: str = "scaling",
                   meta: Mapping[str, Any] | None = None,
                   arrays: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``tables`` as ``<name>.parquet``, ``arrays`` as ``<name>.npy`` and the manifest last.

    ``kind`` names the study kind whose analysis this is (``"scaling"``: the small-to-large
    tables of :func:`~proxyscale.analyze.analyze_study`); ``meta`` is a JSON-able record (NaN
    and infinities are stored as null). Returns the manifest path.
    """
    out = Path(out_dir)
    arrays = dict(arrays or {})
    if set(tables) & set(arrays):
        raise StoreError(f"analysis names {sorted(set(tables) & set(arrays))} are both a table and an array")
    for name, df in tables.items():
        if not isinstance(df, pd.DataFrame):
            raise StoreError(f"analysis table '{name}' is {type(df).__name__}, expected a pandas DataFrame")
        write_table(out / f"{_check_name(name, 'table')}.parquet", df.reset_index(drop=True))
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray):
            raise StoreError(f"analysis array '{name}' is {type(arr).__name__}, expected a numpy array")
        write_npy(out / f"{_check_name(name, 'array')}.npy", arr)
    write_json(out / MANIFEST, {"format_version": FORMAT_VERSION, "kind": kind, "tables": sorted(tables),
                                "arrays": sorted(arrays), "meta": dict(meta or {})})
    return out / MANIFEST


def _manifest(out: Path, kind: str | None) -> dict[str, Any]:
    man_path = out / MANIFEST
    if not man_path.is_file():
        legacy = [n for n in _LEGACY_MANIFESTS if (out / n).is_file()]
        if legacy:
            raise StoreError(f"{out}: an analysis in format 1 ({legacy[0]}); this version reads format "
                             f"{FORMAT_VERSION}; {_RERUN}")
        raise StoreError(f"{out}: no {MANIFEST}; run the analysis step (e.g. analyze_study + write_analysis) first")
    man = read_json(man_path)
    if man.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{out}: analysis format {man.get('format_version')}, this version reads "
                         f"{FORMAT_VERSION}; {_RERUN}")
    if kind is not None and man.get("kind") != kind:
        raise StoreError(f"{out}: a '{man.get('kind')}' analysis, not a '{kind}' one; point at the "
                         f"analysis step of a {kind} study")
    return man


def _listed(out: Path, name: str, suffix: str) -> Path:
    p = out / f"{name}{suffix}"
    if not p.is_file():
        raise StoreError(f"{p} is listed in {MANIFEST} but missing; {_RERUN}")
    return p


def read_analysis(out_dir: str | Path, *, kind: str | None = None) -> Analysis:
    """Read a directory written by :func:`write_analysis`.

    With ``kind``, a directory holding another study kind's analysis is an error.
    """
    out = Path(out_dir)
    man = _manifest(out, kind)
    tables = {name: read_table(_listed(out, name, ".parquet")) for name in man["tables"]}
    arrays = {name: np.load(_listed(out, name, ".npy"), allow_pickle=False)
              for name in man["arrays"]}
    return Analysis(kind=man["kind"], tables=tables, arrays=arrays, meta=man["meta"])
