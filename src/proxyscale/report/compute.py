"""The "Compute spent" section: what training each rung actually cost (from the runs' records)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd

from ..store import read_json
from .section import Section
from .tables import from_frame


def compute_section(analysis_dir: Path) -> Section | None:
    """Sum each rung's recorded training FLOPs, tokens and wall time over its runs."""
    path = Path(analysis_dir) / "compute.json"
    if not path.is_file():
        return None
    agg: dict[str, dict[str, float]] = defaultdict(lambda: {"runs": 0, "flops": 0.0, "tokens": 0.0, "wall_s": 0.0})
    for key, rec in read_json(path).items():
        row = agg[key.split(":")[1]]  # key = distribution:rung:seed
        row["runs"] += 1
        for k in ("flops", "tokens", "wall_s"):
            row[k] += float(rec.get(k) or 0.0)
    if not agg:
        return None
    df = pd.DataFrame([{"rung": r, **v, "tok_s": v["tokens"] / max(v["wall_s"], 1e-9)} for r, v in agg.items()])
    df = df.sort_values("flops").reset_index(drop=True)
    df["share"] = df["flops"] / df["flops"].sum()
    table = from_frame(df, {"rung": "rung", "runs": "runs", "flops": "training FLOPs", "share": "share of all",
                            "tokens": "tokens", "wall_s": "wall seconds", "tok_s": "tokens/s"},
                       note="Measured by each training run (FLOPs = 6·params·tokens).")
    intro = ("Training compute actually spent per rung, summed over distributions and seeds; the "
             "proxies' share is what a proxy study costs next to the reference runs.")
    return Section("Compute spent", f"<p>{intro}</p>{table.to_html()}", f"{intro}\n\n{table.to_markdown()}")
