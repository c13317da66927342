"""The GPU table and the per-rank memory model (models/memory.py), with hand-computed values."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from proxyscale.errors import ConfigError
from proxyscale.models.ladder import GPTConfig, param_count
from proxyscale.models.memory import GPUS, choose_ranks, largest_micro_batch, lookup_gpu, rank_memory

SMALL = GPTConfig(vocab_size=1000, context=128, d_model=64, n_layers=2, n_heads=4)
P760 = GPTConfig(vocab_size=50368, context=2048, d_model=1536, n_layers=24, n_heads=12)


def test_hand_computed_bytes_of_one_shape():
    # P = V·d + T·d + L·(12d² + 13d) + 2d = 64,000 + 8,192 + 2·(49,152 + 832) + 128
    assert param_count(SMALL) == 172_288
    m = rank_memory(SMALL, 4)  # bf16 activations, fused attention
    assert (m.params, m.grads, m.optimizer) == (689_152, 689_152, 1_378_304)
    assert m.activations == 2 * 4 * 128 * 34 * 64  # L·m·T·34·d = 2,228,224
    assert m.logits == 4 * 128 * 1000 * 14  # m·T·V·(2 + 3·4) = 7,168,000
    assert m.total == 12_152_832
    plain = rank_memory(SMALL, 4, fused_attention=False)  # + L·m·5·h·T² score bytes
    assert plain.activations == 2_228_224 + 2 * 5 * 4 * 4 * 128 * 128
    ckpt = rank_memory(SMALL, 4, checkpointing=True)  # L·m·T·d·2 inputs + one layer's activations
    assert ckpt.activations == 2 * 4 * 128 * 64 * 2 + 4 * 128 * 34 * 64
    fp32 = rank_memory(SMALL, 4, act_bytes=4)  # fp32: twice the activations, 4 × 4 bytes per logit
    assert fp32.activations == 2 * 2_228_224 and fp32.logits == 4 * 128 * 1000 * 16


def test_micro_batch_and_ranks_of_the_760m_rung_on_h100_and_l4():
    # 16·P = 12.2 GB fixed; one 2,048-token sequence keeps 2.57 GB of activations + 1.44 GB of logits
    h100, l4 = GPUS["H100-80GB"], GPUS["L4-24GB"]
    assert choose_ranks(P760, 256, h100) == 8 and choose_ranks(P760, 256, l4) == 8  # none avoids accumulation
    assert largest_micro_batch(P760, 32, h100) == 8  # (72 − 12.2) / 4.01 = 14.9 → 8 (a divisor of 32)
    assert largest_micro_batch(P760, 32, l4) == 2  # (21.6 − 12.2) / 4.01 = 2.35 → 2
    assert largest_micro_batch(P760, 32, lookup_gpu("tiny", 12, 100)) is None  # not even one sequence
    small = GPTConfig(vocab_size=512, context=128, d_model=32, n_layers=2, n_heads=2)
    assert choose_ranks(small, 32, h100) == 1  # the whole batch fits one pass


def test_gpu_names_and_custom_gpus():
    assert lookup_gpu("H200-141GB").memory_gb == 141 and lookup_gpu("A100-40GB").peak_tflops == 312
    assert lookup_gpu("mine", memory_gb=48, peak_tflops=362).memory_bytes == 48e9
    assert lookup_gpu("H100-80GB", peak_tflops=900).peak_tflops == 900  # a known GPU, one number overridden
    with pytest.raises(ConfigError, match="unknown GPU 'H100'; name one of H100-80GB .*L4-24GB"):
        lookup_gpu("H100")


BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory_model.py"


@pytest.mark.parametrize("shape", [(4096, 128, 128, 2, 2, 8), (2048, 256, 256, 4, 4, 8)],
                         ids=["logits-heavy", "activations-heavy"])
def test_the_fp32_model_is_within_15_percent_of_a_measured_cpu_peak(shape):
    """Peak RSS (VmHWM) a fresh worker adds while training two steps (benchmarks/bench_memory_model.py),
    run after other tests have grown this process: the child must not inherit its peak."""
    out = subprocess.run([sys.executable, str(BENCH), "--child", json.dumps([*shape, "cpu"])], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    measured = float(out.stdout.strip().splitlines()[-1])
    V, T, d, L, h, m = shape
    model = rank_memory(GPTConfig(vocab_size=V, context=T, d_model=d, n_layers=L, n_heads=h), m, act_bytes=4)
    assert 0.85 <= measured / model.total <= 1.15, (measured / 2**20, model.describe())
