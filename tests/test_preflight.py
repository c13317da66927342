"""The whole-plan check before any step runs: the resource estimate, its refusals and --force."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bad_inputs import SRC, tiny_spec, write_sources
from proxyscale.errors import ConfigError, DataError
from proxyscale.models.ladder import GPTConfig, param_count
from proxyscale.studies import load_study
from proxyscale.studies import preflight as pf


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preflight") / "data"
    write_sources(root)
    return root


def plan_of(spec: dict):
    study, s = load_study(spec)
    return study.plan(s)


def test_gpt_memory_is_the_stated_formula():
    V, T, d, L, h, B = 1000, 64, 32, 3, 4, 8
    P = param_count(GPTConfig(vocab_size=V, context=T, d_model=d, n_layers=L, n_heads=h))
    model = {"vocab_size": V, "context": T, "d_model": d, "n_layers": L, "n_heads": h}
    train = pf.gpt_memory(model, B, training=True, plain_attention=False)
    assert train == 16 * P + B * T * d * 24 * 4 * L + B * T * V * 4 * 4
    vmapped = pf.gpt_memory(model, B, training=True, plain_attention=True)
    assert vmapped - train == B * h * T * T * 4 * 2 * L
    assert pf.gpt_memory(model, B, training=False, plain_attention=False) == 4 * P + B * T * d * 24 * 4 + B * T * V * 8


def test_memory_estimate_tracks_a_measured_training_step(tmp_path):
    """Peak anonymous memory (RssAnon, sampled every 2 ms; file pages such as torch's libraries
    are left out) of two real training steps against the estimate."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc")
    script = textwrap.dedent("""
        import threading, time, torch
        torch.set_num_threads(1)
        from proxyscale.models.gpt import GPT, GPTConfig
        from proxyscale.studies.preflight import gpt_memory

        def anon():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        peak, stop = [anon()], threading.Event()
        def sample():
            while not stop.is_set():
                peak.append(anon())
                time.sleep(0.002)
        shape = dict(vocab_size=4096, context=128, d_model=256, n_layers=4, n_heads=4)
        base = anon()
        threading.Thread(target=sample, daemon=True).start()
        model = GPT(GPTConfig(**shape))
        opt = torch.optim.AdamW(model.parameters())
        x = torch.randint(0, 4096, (32, 129))
        for _ in range(2):
            logits = model(x[:, :-1])
            torch.nn.functional.cross_entropy(logits.reshape(-1, 4096).float(), x[:, 1:].reshape(-1)).backward()
            opt.step()
            opt.zero_grad()
        stop.set()
        print(gpt_memory(shape, 32, training=True, plain_attention=False) / (max(peak) - base))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert 0.7 < float(r.stdout) < 1.4, r.stdout  # 0.99–1.02 on the project's 2-core machine


def test_a_plan_that_fits_passes_and_a_long_one_is_refused_with_the_estimate(data):
    est = pf.preflight(plan_of(tiny_spec(data)), device="cpu")
    assert est.refusal() is None and est.peak_bytes > 0 and est.flops > 0 and est.n_steps > 10
    big = tiny_spec(data)
    big["ladder"]["tokens_per_param"] = 1e9
    with pytest.raises(ConfigError) as e:
        pf.preflight(plan_of(big), device="cpu")
    msg = str(e.value)
    assert "refusing to start" in msg and "FLOPs" in msg and "h on this CPU" in msg and "pass --force" in msg
    assert "\n" not in msg
    forced = pf.preflight(plan_of(big), device="cpu", force=True)
    assert forced.refusal() is not None and forced.hours > pf.CPU_HOURS_CEILING


def test_memory_refusal_names_the_step(data):
    wide = tiny_spec(data)
    wide["ladder"]["rungs"][1]["d_model"] = 2**20
    with pytest.raises(ConfigError, match=r"step train/\S+-L1d8-s0 needs about .* of memory but this machine has"):
        pf.preflight(plan_of(wide), device="cpu")


def test_batched_small_models_count_together(data, monkeypatch):
    import proxyscale.studies.fragments.measured as measured

    monkeypatch.setattr(measured, "available_cores", lambda: 1)  # stacks sized for one core: one stack of 2
    spec = tiny_spec(data)
    spec["executor"] = {"workers": 1, "max_batch": 3}
    plan = plan_of(spec)
    trains = [s for s in plan if s.kind == "train" and s.config["rung"] == "L1d4"]
    assert len(trains) == 2 and trains[0].batch_key == trains[1].batch_key is not None  # 2 distributions × 1 seed
    one = pf.gpt_memory(trains[0].config["model"], 4, training=True, plain_attention=True)
    est = pf.estimate(plan, trains, max_batch=3, device="cpu")
    assert est.peak_bytes == pytest.approx(2 * one)


def test_on_cuda_only_memory_is_checked():
    est = pf.Estimate(n_steps=1, flops=1e30, peak_bytes=1.0, peak_step="x", device="cuda", memory_bytes=2.0,
                      flops_per_s=None)
    assert est.hours is None and est.refusal() is None


class DoneStore:
    def is_done(self, key: str) -> bool:
        return True


def test_only_pending_steps_are_checked(data):
    spec = tiny_spec(data)
    spec["sources"]["doc"]["path"] = str(data / "moved-away.jsonl")
    plan = plan_of(spec)
    with pytest.raises(DataError, match="moved-away.jsonl: local source path does not exist"):
        pf.preflight(plan, device="cpu")
    est = pf.preflight(plan, DoneStore(), device="cpu")  # a finished study does not re-read its data
    assert est.n_steps == 0 and est.flops == 0


def test_plan_text_shows_the_estimate_and_what_run_would_do(data, tmp_path):
    import yaml

    from proxyscale.api import plan_text

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(data)))
    assert "`proxyscale run` would start" in plan_text(path) and "resource estimate" in plan_text(path)
    bad = tiny_spec(data)
    bad["sources"]["doc"]["path"] = str(data)  # a directory holding a non-UTF-8 file
    (data / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    try:
        path.write_text(yaml.safe_dump(bad))
        assert "`proxyscale run` would refuse: sources.doc: " in plan_text(path).splitlines()[-1]
    finally:
        (data / "latin.txt").unlink()


def test_run_refuses_without_force_and_runs_with_it(data, tmp_path, monkeypatch, capsys):
    """`proxyscale run` of a tiny study under a ceiling it exceeds: refused before anything is
    written, then run to the end with --force."""
    import yaml

    from proxyscale import cli

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(data)))
    store = tmp_path / "store"
    monkeypatch.setattr(pf, "CPU_HOURS_CEILING", 1e-9)
    monkeypatch.setattr(pf, "machine", lambda device=None: ("cpu, 2 cores", 64 * 2.0**30, 32e9))
    argv = ["proxyscale", "run", str(path), "--store", str(store), "--no-progress", "--workers", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "pass --force" in err and len(err.strip().splitlines()) == 1
    assert not store.exists()
    monkeypatch.setattr(sys, "argv", [*argv, "--force"])
    cli.main()
    assert (store / "tiny" / "report.html").is_file()
