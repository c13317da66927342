"""LDS of TRAK on scikit-learn digits, against M, α, k and λ (an experiment, not a test).

Ground truth (SPEC §5/§8): ``--subsets`` α-subsets of the ``--n-train`` training images plus
``--holdout`` more for choosing λ, ``--seeds`` models per subset (margins averaged), targets =
the first ``--targets`` test images. Attribution: TRAK on an ensemble of up to max(``--M``)
models trained on the full train set (independent seeds; ``--ckpts`` > 1 adds checkpoints of
the last third of each run), projected to each ``--k``; λ = r · mean‖φ‖² with r from
``--lambdas``, chosen per (α, k, M) by LDS on the held-out subsets. Baselines: the exact
gradient dot product and, for reference, datamodels (LASSO) fitted on the same subsets.

Digits ResNet ladder (8x8 inputs, strides (1,2,2,1), μP with base width 1/16, GroupNorm):
w = 1/32 (11.4K params), 1/16 (44.6K), 1/8 (176K); the reference is w = 1/8. Its recipe uses
peak learning rate 0.01: at the CIFAR recipe's 0.1 the ground truth is mostly seed noise.

    .venv/bin/python benchmarks/lds_digits.py --model mlp --lambdas 0.1 0.3 1 3 10 --json /tmp/lds_mlp.json
    .venv/bin/python benchmarks/lds_digits.py --model resnet --width 0.125 --alphas 0.5 \\
        --k 512 2048 --lambdas 1 3 10 30 100 --json /tmp/lds_resnet.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "resnet"], default="mlp")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (ResNet: 0.125 = reference)")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--targets", type=int, default=100)
    p.add_argument("--subsets", type=int, default=100)
    p.add_argument("--holdout", type=int, default=20)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.25])
    p.add_argument("--M", type=int, nargs="+", default=[1, 2, 5])
    p.add_argument("--ckpts", type=int, default=1, help="checkpoints per run in the ensemble")
    p.add_argument("--k", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--lambdas", type=float, nargs="+", default=[0.01, 0.1, 1.0, 10.0])
    p.add_argument("--betas", type=float, nargs="+", default=[0.001, 0.003, 0.01])
    p.add_argument("--shared-seeds", action="store_true",
                   help="ground truth with common random numbers: replicate r uses one seed on every subset")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--peak-lr", type=float, default=None, help="one-cycle peak (default: 0.1 MLP, 0.01 ResNet)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=str, default=None, help="directory to keep ground truth between runs")
    p.add_argument("--json", type=str, default=None)
    return p.parse_args()


def setup(args):
    """Data, model spec and training recipe for the chosen model."""
    from proxyscale.data.vision import load_digits_data
    from proxyscale.models.mlp import MLPConfig
    from proxyscale.models.resnet import ResNetConfig
    from proxyscale.seeding import np_rng
    from proxyscale.train.vision import VisionModelSpec, VisionTrainConfig

    data = load_digits_data(np_rng(args.seed, "digits-split"), n_train=args.n_train)
    if args.model == "mlp":
        data = data.flat()
        spec = VisionModelSpec(kind="mlp", mlp=MLPConfig(width_mult=args.width))
        epochs = args.epochs or 20
    else:
        spec = VisionModelSpec(kind="resnet", resnet=ResNetConfig(
            width_mult=args.width, in_channels=1, strides=(1, 2, 2, 1), mup=True, base_width_mult=1 / 16))
        epochs = args.epochs or 15
    lr = args.peak_lr or (0.1 if args.model == "mlp" else 0.01)
    train = VisionTrainConfig(epochs=epochs, batch_size=args.batch_size, peak_lr=lr, n_checkpoints=args.ckpts)
    return data, spec, train


def ground_truth(args, data, spec, train, alpha):
    """Masks (m + holdout, n) and margins (m + holdout, seeds, T), cached by content hash."""
    from proxyscale.attribute.retrain import RetrainConfig, retrain_outputs
    from proxyscale.attribute.subsets import sample_subsets
    from proxyscale.config import content_hash
    from proxyscale.seeding import np_rng
    from proxyscale.store import write_npy

    cfg = RetrainConfig(model=spec, train=train, n_seeds=args.seeds, seed=args.seed,
                        vectorize=spec.kind == "mlp", chunk=64, shared_seeds=args.shared_seeds)
    m = args.subsets + args.holdout
    key = content_hash([cfg, alpha, m, args.n_train, args.targets, args.seed])
    cache = Path(args.cache) / f"gt-{key}" if args.cache else None
    if cache is not None and (cache / "outputs.npy").is_file():
        return np.load(cache / "masks.npy"), np.load(cache / "outputs.npy"), 0.0
    t0 = time.time()
    masks = sample_subsets(args.n_train, alpha, m, np_rng(args.seed, "lds-subsets", alpha))
    out = retrain_outputs(cfg, data.x_train, data.y_train, masks, data.x_test[:args.targets],
                          data.y_test[:args.targets])
    if cache is not None:
        write_npy(cache / "masks.npy", masks)
        write_npy(cache / "outputs.npy", out)
    return masks, out, time.time() - t0


def ensemble(args, data, spec, train):
    """State dicts of max(M) full-data runs, ``--ckpts`` checkpoints each (ordered run-major)."""
    from proxyscale.seeding import derive_seed
    from proxyscale.train.vision import train_models

    n_runs = max(args.M)
    res = train_models(spec.config(), train, data.x_train, data.y_train, np.ones((n_runs, args.n_train), bool),
                       [derive_seed(args.seed, "trak-model", i) for i in range(n_runs)],
                       vectorize=spec.kind == "mlp")
    return [[{n: p[e] for n, p in ck.items()} for _, ck in res.checkpoints] for e in range(n_runs)]


def trak_rows(args, data, spec, runs, gts):
    """LDS for every (k, M, λ, Q) on every α; λ is chosen afterwards on the held-out subsets."""
    from proxyscale.attribute.lds import lds
    from proxyscale.attribute.trak import TRAK
    from proxyscale.train.vision import build_model

    model, targets = build_model(spec.config()), (data.x_test[:args.targets], data.y_test[:args.targets])
    rows = []
    for k in args.k:
        t0 = time.time()
        trak = TRAK(model, "classification", k=k, seed=args.seed)
        for r, states in enumerate(runs):
            for c, state in enumerate(states):
                trak.featurize(state, (data.x_train, data.y_train), model_id=r * 100 + c)
        feat_s = time.time() - t0
        cands = trak.score_candidates(targets, args.lambdas, (False, True), n_models=[M * args.ckpts for M in args.M])
        for c, scores in cands:
            for alpha, (masks, out) in gts.items():
                fit, hold = masks[:args.subsets], masks[args.subsets:]
                res = lds(scores, fit, out[:args.subsets])
                rows.append({"alpha": alpha, "k": k, "M": c["n_models"] // args.ckpts,
                             "lambda_ratio": c["lambda_ratio"], "use_q": c["use_q"], "lds": res.mean,
                             "lds_holdout": lds(scores, hold, out[args.subsets:]).mean, "featurize_s": feat_s,
                             "_per_target": res})
    return rows


def baselines(args, data, spec, runs, gts):
    """Exact gradient dot product (all max(M) runs, last checkpoint) and datamodels."""
    from proxyscale.attribute.datamodels import fit_datamodels
    from proxyscale.attribute.lds import lds
    from proxyscale.attribute.trak import grad_dot_scores
    from proxyscale.train.vision import build_model

    targets = (data.x_test[:args.targets], data.y_test[:args.targets])
    dot = grad_dot_scores(build_model(spec.config()), [s[-1] for s in runs], (data.x_train, data.y_train), targets)
    out = []
    for alpha, (masks, gt) in gts.items():
        fit, hold = masks[:args.subsets], masks[args.subsets:]
        res = lds(dot, fit, gt[:args.subsets])
        row = {"alpha": alpha, "grad_dot": res.mean, "_per_target": res}
        # datamodels must be judged on subsets they were not fitted on: fit on `fit`, score `hold`
        for beta in args.betas:
            dm = fit_datamodels(fit, gt[:args.subsets].mean(axis=1), beta)
            row[f"datamodels_beta{beta:g}_holdout"] = lds(dm.weights, hold, gt[args.subsets:]).mean
        out.append(row)
    return out


def summarise(rows, base, ceilings):
    """Markdown table: per (α, Q, k, M) the held-out-chosen λ and its LDS."""
    lines = ["| α | Q | k | M | λ ratio (held-out) | LDS | LDS per λ ratio |", "|---|---|---|---|---|---|---|"]
    keys = sorted({(r["alpha"], r["use_q"], r["k"], r["M"]) for r in rows}, key=lambda t: (-t[0], t[1], t[2], t[3]))
    for a, q, k, M in keys:
        group = [r for r in rows if (r["alpha"], r["use_q"], r["k"], r["M"]) == (a, q, k, M)]
        best = max(group, key=lambda r: r["lds_holdout"])
        per = " ".join(f"{r['lambda_ratio']:g}:{r['lds']:.3f}" for r in group)
        lines.append(f"| {a:g} | {'y' if q else 'n'} | {k} | {M} | "
                     f"{best['lambda_ratio']:g} | {best['lds']:.3f} | {per} |")
    for b in base:
        extra = ", ".join(f"{k}={v:.3f}" for k, v in b.items() if k not in ("alpha", "_per_target"))
        agree, attain = ceilings[b["alpha"]]
        lines.append(f"\nα={b['alpha']:g}: {extra}; seed-to-seed agreement {agree:.3f}, "
                     f"LDS of a perfect predictor {attain:.3f}")
        lines.append(versus_grad_dot(rows, b))
    return "\n".join(lines)


def versus_grad_dot(rows, base) -> str:
    """TRAK (largest k and M, λ and Q chosen on held-out subsets) minus the gradient dot
    product, per target, with a paired bootstrap CI."""
    from proxyscale.attribute.lds import paired_difference

    mine = [r for r in rows if r["alpha"] == base["alpha"]]
    k, M = max(r["k"] for r in mine), max(r["M"] for r in mine)
    best = max((r for r in mine if r["k"] == k and r["M"] == M), key=lambda r: r["lds_holdout"])
    d, lo, hi = paired_difference(best["_per_target"], base["_per_target"], np.random.default_rng(0))
    base["trak_minus_grad_dot"] = [d, lo, hi]
    return (f"TRAK (k={k}, M={M}, λ ratio {best['lambda_ratio']:g}, Q {'on' if best['use_q'] else 'off'}) "
            f"{best['lds']:.3f} − grad-dot {base['grad_dot']:.3f} = {d:+.3f} [95% CI {lo:+.3f}, {hi:+.3f}]")


def main() -> None:
    args = parse()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from proxyscale.attribute.lds import lds_ceiling, seed_agreement

    t0 = time.time()
    data, spec, train = setup(args)
    gts, timing = {}, {}
    for alpha in args.alphas:
        masks, out, secs = ground_truth(args, data, spec, train, alpha)
        gts[alpha], timing[f"ground_truth_{alpha:g}_s"] = (masks, out), secs
    t1 = time.time()
    runs = ensemble(args, data, spec, train)
    timing["ensemble_s"] = time.time() - t1
    rows = trak_rows(args, data, spec, runs, gts)
    base = baselines(args, data, spec, runs, gts)
    ceilings = {a: (seed_agreement(out[:args.subsets]), lds_ceiling(out[:args.subsets])) for a, (_, out) in gts.items()}
    timing["total_s"] = time.time() - t0
    print(summarise(rows, base, ceilings))
    print(json.dumps(timing))
    if args.json:
        from proxyscale.store import write_json

        def plain(d):
            return {k: v for k, v in d.items() if not k.startswith("_")}

        write_json(args.json, {"args": vars(args), "rows": [plain(r) for r in rows],
                               "baselines": [plain(b) for b in base], "ceilings": ceilings,
                               "timing": timing, "machine": platform.platform(), "threads": args.threads})


if __name__ == "__main__":
    main()
