"""Time and peak memory of the small-to-large analysis and report on suites up to DataDecide's size.

A synthetic suite (:func:`proxyscale.analyze.synthetic.make_synthetic_suite`: 25 distributions ×
scales × seeds, 10 test sets, results built one test set at a time) goes through
``analyze_study`` (1,000 bootstrap resamples), ``write_analysis`` and the full report. Each size
runs in a fresh process so its peak RSS is its own. The largest, 25 × 14 × 3 = 1,050 models ×
10 test sets × 2,000 examples = 21M result rows, must take ≤ 10 minutes with peak RSS ≤ 6 GiB
on 2 cores. Each run also checks the analysis against the suite's known truth: the largest
error of a scatter point against the expected cell mean, and of the R² against the R² of the
true cell means.

    python benchmarks/bench_suite_scale.py                 # every size (several minutes)
    python benchmarks/bench_suite_scale.py --only 50x500   # one size

``--through-run`` measures what a user runs instead: the suite is written as one Parquet results
table per model, a suite spec names them, and ``proxyscale run`` runs it under ``/usr/bin/time -v``
(the table steps, the streaming ``suite_analyze`` step and the report). Its table gives the wall
time, the CPU time of the whole process tree (what a shared machine does not inflate), the peak
RSS of the largest process, the CPU model and the load average before and after:

    python benchmarks/bench_suite_scale.py --through-run --only 105x2000 --only 1050x2000

``--shared-table`` gives the suite as one results table holding every model's rows (a ``model``
column), DataDecide's layout, read by one step; ``--layouts both`` times both layouts per size:

    python benchmarks/bench_suite_scale.py --through-run --only 105x2000 --layouts both
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # name: (distributions, scales, seeds, examples)
    "50x500": (25, 2, 1, 500), "50x2000": (25, 2, 1, 2000),
    "200x500": (25, 4, 2, 500), "200x2000": (25, 4, 2, 2000),
    "1050x500": (25, 14, 3, 500), "1050x2000": (25, 14, 3, 2000),
    "105x2000": (5, 7, 3, 2000),  # a tenth of the largest suite's rows
}


def _child(name: str, out: Path) -> dict:
    """One size, in this process: analysis, then report; returns timings, peak RSS and truth errors."""
    import resource

    import numpy as np

    from proxyscale.analyze import analyze_study, stats, write_analysis
    from proxyscale.analyze.synthetic import SuiteDesign, make_synthetic_suite
    from proxyscale.report import write_report
    from proxyscale.studies.scaling.report import report_parts

    n_dist, n_scales, n_seeds, n_ex = SIZES[name]
    s = make_synthetic_suite(0, SuiteDesign(n_dist=n_dist, n_scales=n_scales, n_seeds=n_seeds, n_examples=n_ex))
    t0 = time.perf_counter()
    a = analyze_study(s["results"], s["models"], s["distributions"], s["test_sets"], seed=0, n_boot=1000)
    t1 = time.perf_counter()
    write_analysis(a, out / "analysis", kind="scaling")
    sections, files = report_parts(out / "analysis")
    write_report(out / "report", "suite benchmark", sections, files=files)
    t2 = time.perf_counter()
    truth = s["truth"].set_index(["test_set", "model", "distribution"])["loss"]
    pts = a["points"].set_index(["test_set", "model", "distribution"])
    err_x = float((pts["x"] - truth.reindex(pts.index)).abs().max())
    r2_err = 0.0
    for (ts, m), g in a["points"].groupby(["test_set", "model"]):
        tx = truth.loc[ts, m].reindex(g["distribution"]).to_numpy()
        ty = truth.loc[ts, s["models"]["model"].iloc[-1]].reindex(g["distribution"]).to_numpy()
        got = a["summary"].query("test_set == @ts and model == @m")["r2"].iloc[0]
        r2_err = max(r2_err, abs(float(got) - float(stats.r2_linear(tx, ty))))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"size": name, "models": n_dist * n_scales * n_seeds, "examples": n_ex,
            "rows_millions": round(n_dist * n_scales * n_seeds * n_ex * 10 / 1e6, 2),
            "analysis_s": round(t1 - t0, 1), "report_s": round(t2 - t1, 1), "total_s": round(t2 - t0, 1),
            "peak_rss_gib": round(rss, 2), "max_point_error": round(err_x, 4), "max_r2_error": round(r2_err, 4),
            "load_1min": round(os.getloadavg()[0], 2), "n_points": int(np.isfinite(pts["x"]).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=sorted(SIZES), action="append")
    p.add_argument("--child", choices=sorted(SIZES), help=argparse.SUPPRESS)
    p.add_argument("--through-run", action="store_true", help="time `proxyscale run` on results tables")
    p.add_argument("--shared-table", action="store_true", help="with --through-run: one table for all models")
    p.add_argument("--layouts", choices=("one", "both"), default="one",
                   help="with --through-run: both = a table per model, then one shared table")
    args = p.parse_args()
    if args.through_run:
        from bench_suite_run import through_run_table

        layouts = (False, True) if args.layouts == "both" else (args.shared_table,)
        through_run_table(args.only or ["105x2000", "1050x2000"], SIZES, layouts)
        return
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(_child(args.child, Path(tmp))))
        return
    print("| models | examples | rows | analysis s | report s | total s | peak RSS GiB | max point err | "
          "max R² err | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.only or list(SIZES):
        proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {r['models']} | {r['examples']} | {r['rows_millions']}M | {r['analysis_s']} | {r['report_s']} | "
              f"{r['total_s']} | {r['peak_rss_gib']} | {r['max_point_error']} | {r['max_r2_error']} | "
              f"{r['load_1min']} |", flush=True)


if __name__ == "__main__":
    main()
