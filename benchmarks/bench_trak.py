"""TRAK featurisation speed: proxyscale vs the ``traker`` package, same model, data, k, fp32, CPU.

Each side runs in its own child process (so peak RSS is its own), featurises the same train
set under the same checkpoints, scores the same targets, and writes its scores; the parent
checks that proxyscale's compat-mode scores equal traker's and prints the ratios. It also times
proxyscale with gradients of the last layer only (the parameter-subset saving).

    .venv/bin/python benchmarks/bench_trak.py            # ~3 minutes on 2 shared cores
    .venv/bin/python benchmarks/bench_trak.py --n 256 --k 256   # quicker
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from proxyscale.train.calibrate import cpu_info


def make_model(args: argparse.Namespace, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(args.d_in, args.width), torch.nn.Tanh(),
                               torch.nn.Linear(args.width, args.width // 2), torch.nn.Tanh(),
                               torch.nn.Linear(args.width // 2, 10))


def build(args: argparse.Namespace):
    """The shared model, checkpoints and data (deterministic from the seed)."""
    model = make_model(args, args.seed)
    states = [make_model(args, args.seed + 10 + i).state_dict() for i in range(args.models)]
    g = torch.Generator().manual_seed(args.seed + 1)
    x = torch.randn(args.n + args.m, args.d_in, generator=g)
    y = torch.randint(0, 10, (args.n + args.m,), generator=g)
    return model, states, (x[:args.n], y[:args.n]), (x[args.n:], y[args.n:])


def run_ours(args, model, states, train, targets, out: Path, param_filter=None) -> dict:
    from proxyscale.attribute import TRAK

    trak = TRAK(model, k=args.k, compat=True, projector="gaussian", seed=0, batch_size=args.batch,
                param_filter=param_filter)
    t0, c0 = time.perf_counter(), time.process_time()
    for i, s in enumerate(states):
        trak.featurize(s, train, model_id=i)
    rec = {"featurize_s": time.perf_counter() - t0, "featurize_cpu_s": time.process_time() - c0, "p": trak.p}
    np.save(out / "scores.npy", trak.score(targets))
    return rec


def run_traker(args, model, states, train, targets, out: Path) -> dict:
    from trak import TRAKer

    x, y = train
    with tempfile.TemporaryDirectory() as d:
        tr = TRAKer(model=model, task="image_classification", train_set_size=len(x), save_dir=d, device="cpu",
                    proj_dim=args.k, use_half_precision=False, logging_level=logging.ERROR, projector_seed=0)
        t0, c0 = time.perf_counter(), time.process_time()
        for i, s in enumerate(states):
            tr.load_checkpoint(s, model_id=i)
            for b in range(0, len(x), args.batch):
                tr.featurize((x[b:b + args.batch], y[b:b + args.batch]), num_samples=len(x[b:b + args.batch]))
        rec = {"featurize_s": time.perf_counter() - t0, "featurize_cpu_s": time.process_time() - c0}
        tr.finalize_features()
        for i, s in enumerate(states):
            tr.start_scoring_checkpoint("bench", s, model_id=i, num_targets=len(targets[0]))
            tr.score(targets, num_samples=len(targets[0]))
        np.save(out / "scores.npy", np.array(tr.finalize_scores("bench")))
    return rec


def warm_up(model: torch.nn.Module, train) -> None:
    """One small per-example-gradient call, so lazy torch.func imports are not timed on either side."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    f = torch.func.grad(lambda p, x: torch.func.functional_call(model, p, (x.unsqueeze(0),)).sum())
    torch.func.vmap(f, in_dims=(None, 0))(params, train[0][:2])


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model, states, train, targets = build(args)
    warm_up(model, train)
    out = Path(args.out)
    if args.side == "traker":
        rec = run_traker(args, model, states, train, targets, out)
    else:
        last = [n for n, _ in model.named_parameters()][-2:] if args.side == "ours-last" else None
        rec = run_ours(args, model, states, train, targets, out, param_filter=last)
    rec["examples_per_s"] = args.n * args.models / rec["featurize_s"]
    rec["examples_per_cpu_s"] = args.n * args.models / rec["featurize_cpu_s"]
    rec["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "result.json").write_text(json.dumps(rec))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="train examples")
    ap.add_argument("--m", type=int, default=64, help="target examples")
    ap.add_argument("--k", type=int, default=512, help="projection dimension")
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--models", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs per side; the best is kept")
    ap.add_argument("--side", choices=["ours", "ours-last", "traker"], help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    return ap.parse_args()


def best_of(args: argparse.Namespace, root: Path) -> tuple[dict, dict]:
    """Run every side ``--repeats`` times, interleaved (the machine is shared, so load drifts),
    and keep each side's fastest run."""
    results: dict[str, dict] = {}
    scores: dict[str, np.ndarray] = {}
    for rep in range(args.repeats):
        for side in ("traker", "ours", "ours-last"):
            out = root / f"{side}-{rep}"
            out.mkdir()
            subprocess.run([sys.executable, __file__, "--side", side, "--out", str(out)] + sys.argv[1:], check=True)
            rec = json.loads((out / "result.json").read_text())
            if side not in results or rec["examples_per_s"] > results[side]["examples_per_s"]:
                results[side] = rec
            results[side]["best_cpu"] = max(rec["examples_per_cpu_s"], results[side].get("best_cpu", 0.0))
            scores[side] = np.load(out / "scores.npy")
    return results, scores


def main() -> None:
    args = parse()
    if args.side:
        return child(args)
    with tempfile.TemporaryDirectory() as root:
        results, scores = best_of(args, Path(root))
    ref, ours = scores["traker"], scores["ours"]
    rel = float(np.abs(ours - ref).max() / np.abs(ref).max())
    r, t, last = results["ours"], results["traker"], results["ours-last"]
    info = cpu_info()
    print(f"CPU: {info['model']}  flags: {' '.join(info['flags'])}  torch kernels: {info['capability']}")
    print(f"model: MLP {args.d_in}-{args.width}-{args.width // 2}-10, p = {r['p']}, k = {args.k}, n = {args.n}, "
          f"M = {args.models}, batch {args.batch}, fp32, {args.threads} threads, best of {args.repeats}")
    for side, rec in results.items():
        print(f"{side:10s} featurise {rec['examples_per_s']:8.1f} examples/s (wall), {rec['best_cpu']:8.1f} "
              f"per CPU-s   peak RSS {rec['peak_rss_mib']:6.0f} MiB")
    print(f"speed-up ours / traker: {r['examples_per_s'] / t['examples_per_s']:.1f}x wall, "
          f"{r['best_cpu'] / t['best_cpu']:.1f}x CPU time")
    print(f"last layer only vs all parameters (ours): {last['examples_per_s'] / r['examples_per_s']:.1f}x wall")
    print(f"compat scores vs traker: max |diff| / max |ref| = {rel:.2e}  (allclose rtol=1e-4: "
          f"{np.allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())})")


if __name__ == "__main__":
    main()
