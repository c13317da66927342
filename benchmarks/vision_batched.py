"""Stacked training of many small vision models: vmap over models vs. one after another.

Both modes run the same functional SGD step over the same batch plan (they give the same
numbers, see tests/test_vision_train.py); this times them side by side, interleaved, and
prints the median of per-pair ratios (loop time / vmap time; > 1 means vmap is faster).

    .venv/bin/python benchmarks/vision_batched.py --threads 1
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from proxyscale.data.vision import load_digits_data
    from proxyscale.models.mlp import MLPConfig
    from proxyscale.models.resnet import ResNetConfig
    from proxyscale.train.vision import VisionTrainConfig, train_models

    d = load_digits_data(np.random.default_rng(0), n_train=1000)
    rng = np.random.default_rng(1)
    cases = [("mlp 64-128-10", MLPConfig(), d.flat(), 64, 10),
             ("mlp 64-128-10", MLPConfig(), d.flat(), 8, 10),
             ("resnet w=1/16", ResNetConfig(width_mult=1 / 16, in_channels=1, strides=(1, 2, 2, 1)), d, 8, 2),
             ("resnet w=1/8", ResNetConfig(width_mult=1 / 8, in_channels=1, strides=(1, 2, 2, 1)), d, 4, 2)]
    print(f"| model | models | epochs | vmap s | loop s | loop/vmap (median of {args.repeats}) |")
    print("|---|---|---|---|---|---|")
    for name, cfg, data, n_models, epochs in cases:
        masks = np.zeros((n_models, data.n_train), bool)
        for e in range(n_models):
            masks[e, rng.choice(data.n_train, data.n_train // 2, replace=False)] = True
        train = VisionTrainConfig(epochs=epochs, batch_size=64)
        train_models(cfg, train, data.x_train, data.y_train, masks[:1], [0])  # warm-up (imports, allocator)
        times = {True: [], False: []}
        for _ in range(args.repeats):
            for vec in (True, False):
                t0 = time.perf_counter()
                train_models(cfg, train, data.x_train, data.y_train, masks, list(range(n_models)), vectorize=vec)
                times[vec].append(time.perf_counter() - t0)
        ratio = statistics.median(lo / v for lo, v in zip(times[False], times[True]))
        print(f"| {name} | {n_models} | {epochs} | {statistics.median(times[True]):.2f} | "
              f"{statistics.median(times[False]):.2f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
