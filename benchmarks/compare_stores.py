"""Compare the analysis outputs of two stores (e.g. before and after a refactor): every Parquet
table and .npy array of the ``analyze`` and ``attr_analyze`` steps, matched by step name.

    python benchmarks/compare_stores.py STORE_BEFORE STORE_AFTER

Wall-time columns are left out (they differ run to run), and so is ``settings.format_version``.
Exits 1 if anything differs."""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TIME_COLS = {"wall_s", "batch_wall_s", "tok_s", "tokens_per_s"}


def one(kind: str, root: Path) -> Path:
    dirs = [d for d in (root / "steps" / kind).iterdir() if d.is_dir() and not d.name.startswith(".")]
    return {d.name.rsplit("-", 1)[0]: d for d in dirs}


def main(a_root: str, b_root: str) -> int:
    bad = 0
    for kind in ("analyze", "attr_analyze"):
        A, B = one(kind, Path(a_root)), one(kind, Path(b_root))
        for name in sorted(set(A) & set(B)):
            a, b = A[name], B[name]
            for f in sorted(a.glob("*.parquet")):
                g = b / f.name
                if not g.is_file():
                    print(f"{kind}/{name}/{f.name}: missing after")
                    bad += 1
                    continue
                x, y = pd.read_parquet(f), pd.read_parquet(g)
                drop = [c for c in x.columns if c in TIME_COLS]
                if f.stem == "settings":
                    drop += ["format_version"]
                x, y = x.drop(columns=drop, errors="ignore"), y.drop(columns=drop, errors="ignore")
                try:
                    pd.testing.assert_frame_equal(x, y, check_exact=True)
                    print(f"{kind}/{name}/{f.name}: identical {x.shape}" + (f" (ignoring {drop})" if drop else ""))
                except AssertionError as e:
                    print(f"{kind}/{name}/{f.name}: DIFFERS: {str(e)[:300]}")
                    bad += 1
            for f in sorted(a.glob("*.npy")):
                x, y = np.load(f), np.load(b / f.name)
                same = x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
                print(f"{kind}/{name}/{f.name}: {'identical' if same else 'DIFFERS'} {x.shape}")
                bad += not same
    return bad


if __name__ == "__main__":
    sys.exit(1 if main(*sys.argv[1:3]) else 0)
