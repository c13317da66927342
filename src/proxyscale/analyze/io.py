"""Analysis tables on disk: one Parquet file per table plus a versioned JSON manifest."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import StoreError
from ..store import read_json, read_table, write_json, write_table

FORMAT_VERSION = 1
MANIFEST = "analysis.json"


def write_analysis(analysis: dict[str, pd.DataFrame], out_dir: str | Path) -> Path:
    """Write every table of ``analysis`` as ``<name>.parquet`` and the manifest last.

    The manifest is written after the tables, so a directory with a manifest is complete.
    Returns the manifest path.
    """
    out = Path(out_dir)
    names = []
    for name, df in analysis.items():
        if not isinstance(df, pd.DataFrame):
            raise StoreError(f"analysis entry '{name}' is {type(df).__name__}, expected a pandas DataFrame")
        write_table(out / f"{name}.parquet", df.reset_index(drop=True))
        names.append(name)
    write_json(out / MANIFEST, {"format_version": FORMAT_VERSION, "tables": sorted(names)})
    return out / MANIFEST


def read_analysis(out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read tables written by :func:`write_analysis`."""
    out = Path(out_dir)
    man_path = out / MANIFEST
    if not man_path.is_file():
        raise StoreError(f"{out}: no {MANIFEST}; run the analysis step (analyze_study + write_analysis) first")
    man = read_json(man_path)
    if man.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{out}: analysis format {man.get('format_version')}, this version reads "
                         f"{FORMAT_VERSION}; re-run the analysis step")
    tables = {}
    for name in man["tables"]:
        p = out / f"{name}.parquet"
        if not p.is_file():
            raise StoreError(f"{p} is listed in {MANIFEST} but missing; re-run the analysis step")
        tables[name] = read_table(p)
    return tables
