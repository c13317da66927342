"""The "Compute spent" section: what training each rung actually cost (from the runs' records)."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from ...report.section import Section
from ...report.tables import from_frame

COMPUTE_META = "compute"  # key of the analysis meta: "distribution:rung:seed" -> that run's train_metrics.json


def compute_records(analysis_dir: str | Path, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Each training run's recorded cost: the analysis meta's ``compute`` record (none: empty)."""
    return dict((meta or {}).get(COMPUTE_META) or {})


def compute_section(records: Mapping[str, Mapping[str, Any]]) -> Section | None:
    """Sum each rung's recorded training FLOPs, tokens and wall time over its runs (None: no runs)."""
    agg: dict[str, dict[str, float]] = defaultdict(lambda: {"runs": 0, "flops": 0.0, "tokens": 0.0, "wall_s": 0.0})
    for key, rec in records.items():
        row = agg[key.split(":")[1]]  # key = distribution:rung:seed
        row["runs"] += 1
        for k in ("flops", "tokens"):
            row[k] += float(rec.get(k) or 0.0)
        # a model trained in a batched group is charged its share of the group's wall time
        row["wall_s"] += float(rec.get("compute_wall_s") or rec.get("wall_s") or 0.0)
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
