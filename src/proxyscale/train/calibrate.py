"""Short measured choices made at the start of a run, and recorded in its ``train.json``.

Which way of training is fastest depends on the CPU (an AVX-512/AMX Xeon runs fp32 matmuls up
to ~5× and bf16 ones ~10× faster than a 2-core AVX2 EPYC, which moves the balance between
matmuls and per-op overhead), so it is measured rather than decided by a rule about the CPU:

- ``batched.choose_batching``: K models of one shape stacked into one batched step, or trained
  one after another. A few throwaway steps of each on synthetic tokens, interleaved, medians
  compared (it lives beside the stacked step it times).
- :func:`choose_precision` (``precision: auto`` on CPU): bf16 autocast only where the CPU has
  fast bf16 instructions (AMX or AVX512-BF16) *and* a short run is faster in bf16 *and* its
  losses match fp32 within ``BF16_LOSS_RTOL``; fp32 otherwise. A first round whose speed-up
  falls near the threshold (``AMBIGUOUS``) gets a second round, and the decision is made on
  both together. On CUDA ``auto`` is bf16.

Both are cached per process and per shape. Inside a run store they are also shared between
processes (:func:`shared_choice`, files under the store's ``.calibration/``): the first process
to need a choice measures it, under a lock, and every other process of the study — other
workers, other drivers, later resumes — reads the same record. So all the models of one shape
in a study are trained with the same precision, rather than each worker deciding by its own
noisy timing. Nothing measured here touches a real run's models, data or random streams.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..config import to_dict
from ..models.gpt import GPT, GPTConfig
from ..store import read_json, write_json
from ..store.layout import CALIBRATION_ENV
from .optim import AdamW, TrainConfig, param_settings, resolve_device
from .step import train_step

BF16_LOSS_RTOL = 0.02  # largest relative gap between bf16 and fp32 losses over the probe run
BF16_MIN_SPEEDUP = 1.1  # bf16 must be at least this much faster (a margin over timing noise)
PROBE_STEPS = 6  # timed steps per contender (after one warm-up step each)
AMBIGUOUS = (0.95, 1.3)  # a first-round bf16 speed-up in this band gets a second round of PROBE_STEPS
MIN_STEPS_TO_MEASURE = 10 * (PROBE_STEPS + 1)  # shorter runs skip the probes (they would cost > ~10 %)
_cache: dict[tuple, dict] = {}  # shared with batched.choose_batching
_malloc_kept: bool | None = None


def cpu_info() -> dict:
    """CPU model, the flags that matter for speed, torch's kernel level and thread count."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not name:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"model": name or os.uname().machine, "flags": [f for f in keep if f in flags],
            "capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "malloc_keeps_freed": bool(_malloc_kept)}


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed large blocks for reuse (once per process; False elsewhere).

    By default a block above 32 MB is mmap-ed on every allocation and unmapped when freed, so
    each training step page-faults its logits, their gradient and the other large activations
    afresh (zero-filling every page): the stacked step of K models, whose tensors are K times
    larger, paid that on every step. Measured here at 1 thread: a (10, 4096, 512) logits bmm
    110 → 45 ms; stacked steps of 10 demo-rung models 1.5–1.8× faster. The cost is a process
    that keeps its peak heap instead of returning it to the system.
    """
    global _malloc_kept
    if _malloc_kept is None:
        _malloc_kept = False
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            # M_MMAP_THRESHOLD (-3) and M_TRIM_THRESHOLD (-1): no mmap below 1 GiB, no trimming below 2 GiB
            _malloc_kept = bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, 1 << 31))
        except (OSError, AttributeError):
            pass
    return _malloc_kept


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX tiles or AVX512-BF16 (where oneDNN runs bf16 matmuls natively)."""
    probes = (getattr(torch.cpu, "_is_amx_tile_supported", None), getattr(torch.cpu, "_is_avx512_bf16_supported", None))
    if any(p is not None and p() for p in probes):
        return True
    return bool({"amx_bf16", "avx512_bf16"} & set(cpu_info()["flags"]))


def _probe_batch(cfg: GPTConfig, batch_size: int, step: int, lead: tuple[int, ...] = ()) -> torch.Tensor:
    """A learnable synthetic batch (x[t+1] = x[t] + stride mod V) so probe losses move."""
    g = torch.Generator().manual_seed(step)
    start = torch.randint(0, cfg.vocab_size, lead + (batch_size, 1), generator=g)
    return (start + 7 * torch.arange(cfg.context + 1)) % cfg.vocab_size


def interleaved_times(fns: list[Callable[[int], object]], steps: int = PROBE_STEPS, start: int = 0,
                      warmup: bool = True) -> list[list[float]]:
    """Seconds per call of each fn(i), called in turn for i = start, start + 1, ...: ``steps``
    timed rounds, after one untimed warm-up round unless ``warmup`` is False."""
    times: list[list[float]] = [[] for _ in fns]
    for j in range(steps + warmup):
        for fn, ts in zip(fns, times):
            t = time.perf_counter()
            fn(start + j)
            if j or not warmup:
                ts.append(time.perf_counter() - t)
    return times


def interleaved_medians(fns: list[Callable[[int], object]], steps: int = PROBE_STEPS) -> list[float]:
    """Median seconds per call of each fn(i), called in turn (one untimed warm-up round)."""
    return [statistics.median(ts) for ts in interleaved_times(fns, steps)]


def _single_stepper(cfg: GPTConfig, train_cfg: TrainConfig, device: torch.device, amp: torch.dtype | None,
                    losses: list[float] | None = None) -> Callable[[int], None]:
    model = GPT(cfg, generator=torch.Generator().manual_seed(0)).to(device)
    opt = AdamW(dict(model.named_parameters()), param_settings(model), train_cfg)

    def step(i: int) -> None:
        batch = _probe_batch(cfg, train_cfg.batch_size, i).to(device)
        loss = train_step(model, opt, batch, train_cfg.lr, train_cfg.grad_clip, amp)
        if losses is not None:
            losses.append(float(loss))
    return step


def choose_precision(model_cfg: GPTConfig, train_cfg: TrainConfig, device: torch.device,
                     n_steps: int | None = None) -> tuple[torch.dtype | None, dict]:
    """The autocast dtype (None: fp32) for this run and the record of how it was chosen.
    A run of fewer than ``MIN_STEPS_TO_MEASURE`` steps is not worth measuring for: fp32."""
    if train_cfg.precision != "auto":
        return (torch.bfloat16 if train_cfg.precision == "bf16" else None), {"precision": train_cfg.precision,
                                                                             "reason": "set in the config"}
    if device.type == "cuda":
        return torch.bfloat16, {"precision": "bf16", "reason": "auto on CUDA"}
    if device.type != "cpu" or not cpu_has_fast_bf16():
        return None, {"precision": "fp32", "reason": "auto: no fast bf16 on this device"}
    if n_steps is not None and n_steps < MIN_STEPS_TO_MEASURE:
        why = f"auto: run shorter than {MIN_STEPS_TO_MEASURE} steps, not measured"
        return None, {"precision": "fp32", "reason": why}
    rec = shared_choice("precision", _precision_key(model_cfg, train_cfg, device),
                        lambda: _measure_precision(model_cfg, train_cfg, device))
    assert rec is not None  # may_measure: always a record
    return (torch.bfloat16 if rec["precision"] == "bf16" else None), dict(rec)


def _precision_key(model_cfg: GPTConfig, train_cfg: TrainConfig, device: torch.device) -> dict:
    # Not keyed by machine or threads: one precision per shape and study, whoever measures it.
    return {"model": to_dict(model_cfg), "batch_size": train_cfg.batch_size, "lr": train_cfg.lr,
            "device": device.type}


def decide_precision(model_cfg: GPTConfig, train_cfg: TrainConfig, n_steps: int, measure: bool) -> str:
    """``precision: auto`` resolved before a run's step keys are computed: "fp32", "bf16", or
    "auto" when it takes a measurement that ``measure`` (False in a dry run) forbids.

    Inside a store (``CALIBRATION_ENV`` set) every decision that depends on the machine is
    recorded there, rules included, so a resumed or inspected store resolves to the same keys on
    any machine. Short runs are fp32 by rule (the same everywhere, nothing recorded)."""
    if train_cfg.precision != "auto":
        return train_cfg.precision
    if n_steps < MIN_STEPS_TO_MEASURE:
        return "fp32"
    device = resolve_device(train_cfg.device)

    def measure_now() -> dict:
        if device.type == "cuda":
            return {"precision": "bf16", "reason": "auto on CUDA"}
        if device.type != "cpu" or not cpu_has_fast_bf16():
            return {"precision": "fp32", "reason": "auto: no fast bf16 on this device"}
        return _measure_precision(model_cfg, train_cfg, device)

    rec = shared_choice("precision", _precision_key(model_cfg, train_cfg, device), measure_now, measure)
    return "auto" if rec is None else str(rec["precision"])


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (probes measured at the threads the steps get)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _measure_precision(model_cfg: GPTConfig, train_cfg: TrainConfig, device: torch.device) -> dict:
    l32: list[float] = []
    l16: list[float] = []
    fns = [_single_stepper(model_cfg, train_cfg, device, None, l32),
           _single_stepper(model_cfg, train_cfg, device, torch.bfloat16, l16)]
    s32, s16 = interleaved_times(fns)
    rounds = 1
    if AMBIGUOUS[0] <= statistics.median(s32) / statistics.median(s16) <= AMBIGUOUS[1]:
        # close to the threshold, where one noisy round could decide either way: measure as much again
        m32, m16 = interleaved_times(fns, start=PROBE_STEPS + 1, warmup=False)
        s32, s16, rounds = s32 + m32, s16 + m16, 2
    t32, t16 = statistics.median(s32), statistics.median(s16)
    gap = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(l32, l16))
    speedup = t32 / t16
    ok = speedup >= BF16_MIN_SPEEDUP and gap <= BF16_LOSS_RTOL
    return {"precision": "bf16" if ok else "fp32", "reason": "auto: measured", "fp32_step_s": t32,
            "bf16_step_s": t16, "bf16_speedup": speedup, "loss_rel_gap": gap, "loss_rtol": BF16_LOSS_RTOL,
            "min_speedup": BF16_MIN_SPEEDUP, "probe_steps": len(s32), "probe_rounds": rounds}


def _where() -> dict:
    info = cpu_info()
    return {"host": socket.gethostname(), "pid": os.getpid(), "cpu": info["model"], "threads": info["threads"],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while measuring: a second process waits, then reads
        yield
    finally:
        os.close(fd)


def _read_record(path: Path, key: dict) -> dict | None:
    try:
        rec = read_json(path)
    except Exception:  # noqa: BLE001 - missing, unreadable or damaged: measure again and rewrite it
        return None
    return rec if isinstance(rec, dict) and rec.get("key") == key and "choice" in rec else None


def shared_choice(kind: str, key: dict, measure: Callable[[], dict], may_measure: bool = True) -> dict | None:
    """The choice ``measure()`` returns for ``key``, measured once per process and, inside a run
    store (the environment variable ``PROXYSCALE_CALIBRATION_DIR``, which the worker and the
    driver set), once per store: the record is written to ``<dir>/<kind>-<hash of key>.json`` and
    reused by every process that asks for the same key. The returned dict is the choice plus where
    and when it was measured (``measured``). With ``may_measure`` False nothing is measured or
    written: the stored record, or None when there is none yet."""
    token = json.dumps(key, sort_keys=True, default=str)
    shared = os.environ.get(CALIBRATION_ENV)
    mem = (kind, shared, token)
    if mem in _cache:
        return dict(_cache[mem])
    name = f"{kind}-{hashlib.sha256(token.encode()).hexdigest()[:16]}"
    as_stored = json.loads(token)  # the key as JSON gives it back (tuples become lists)
    if not may_measure:  # a dry run: read only, no lock file either
        found = _read_record(Path(shared) / f"{name}.json", as_stored) if shared else None
        return None if found is None else {**found["choice"], "shared_record": f"{name}.json"}
    if not shared:
        rec = {**measure(), "measured": _where()}
    else:
        path = Path(shared) / f"{name}.json"
        with _locked(Path(shared) / ".locks" / name):
            found = _read_record(path, as_stored)
            if found is None:
                found = {"key": as_stored, "choice": {**measure(), "measured": _where()}}
                write_json(path, found)
        rec = {**found["choice"], "shared_record": path.name}
    _cache[mem] = rec
    return dict(rec)
