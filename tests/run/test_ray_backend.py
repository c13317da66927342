"""The Ray backend against a real Ray cluster started on 127.0.0.1 for this module: same results as
the local backend, a killed worker's batch retried (bounded, counted, nothing lost or redone),
exhausted retries recorded as failures, loopback-only listeners, one-line configuration errors."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from oracles import oracle

ray = oracle("ray")

from test_run_executor import FN, diamond, runs, value  # noqa: E402

import proxyscale  # noqa: E402
from proxyscale.errors import ConfigError  # noqa: E402
from proxyscale.run.backends import make_backend  # noqa: E402
from proxyscale.run.backends.ray import (  # noqa: E402
    SINGLE_NODE_ENV,
    RayBackend,
    is_loopback,
    map_task_options,
    task_options,
)
from proxyscale.run.executor import ExecutorSpec, run_plan  # noqa: E402
from proxyscale.run.plan import Plan, Step  # noqa: E402
from proxyscale.store import Store, read_json  # noqa: E402

HERE = Path(__file__).parent
KILLER = "_fault_steps:die_then_add"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """``ray start --head`` on 127.0.0.1 (2 CPUs, no dashboard, token auth with a fresh token);
    yields (address, the head process); stopped by signalling that process (it owns the others)."""
    port, temp = _free_port(), tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay short
    env = {"RAY_USAGE_STATS_ENABLED": "0", SINGLE_NODE_ENV: "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    pythonpath = os.pathsep.join([str(Path(proxyscale.__file__).parents[1]), str(HERE)])
    head = subprocess.Popen(
        [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        env={**os.environ, **env, "PYTHONPATH": pythonpath}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mp = pytest.MonkeyPatch()
    try:
        for k, v in env.items():
            mp.setenv(k, v)
        from ray._private import ray_constants

        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)  # restored after
        reset_auth_token_state()  # Ray caches the auth mode and token: make it read ours
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, "ray start exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not come up"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}", head
    finally:
        mp.undo()
        reset_auth_token_state()
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def reset_auth_token_state() -> None:
    """Make Ray re-read RAY_AUTH_MODE / RAY_AUTH_TOKEN (it caches them; Rays before token auth: no-op)."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state as reset
    except ImportError:
        return
    reset()


def _ray(cluster, tmp_path, retries: int = 2):
    return make_backend("ray", 2, ray_address=cluster[0], job_dir=tmp_path / "jobs", retries=retries)


def _run(plan, store, backend):
    results = []
    try:
        summary = run_plan(plan, store, backend, progress=False, on_result=results.append,
                           retries=getattr(backend, "retries", 2))
    finally:
        backend.shutdown()
    return summary, {r["key"]: r for r in results}


def _contents(store: Store, plan: Plan) -> dict[str, dict]:
    """Every finished step's files; the step record without its wall time."""
    out = {}
    for s in plan:
        d = store.final_dir(s.key)
        files = {p.name: read_json(p) for p in sorted(d.iterdir())}
        files["_step.json"].pop("wall_s")
        files["_step.json"].pop("batch_wall_s")
        out[s.key] = files
    return out


def test_results_equal_the_local_backend(cluster, tmp_path):
    log_local, log_ray = tmp_path / "log_local", tmp_path / "log_ray"
    local, on_ray = Store(tmp_path / "local"), Store(tmp_path / "ray")
    plan_local, plan_ray = diamond(log_local), diamond(log_ray)
    s_local, _ = _run(plan_local, local, make_backend("local", 2))
    s_ray, res = _run(plan_ray, on_ray, _ray(cluster, tmp_path))
    assert len(s_local.done) == len(s_ray.done) == 5 and not s_ray.failed
    # the log path is part of each step's config, so keys differ; compare step by step, in plan order
    got = list(_contents(on_ray, plan_ray).values())
    want = list(_contents(local, plan_local).values())
    for g, w in zip(got, want):
        for rec in (g, w):
            rec["_step.json"]["config"].pop("log")
            inputs = rec["_step.json"]["inputs"]
            rec["_step.json"]["inputs"] = {r: Path(v).name.split("-")[0] for r, v in inputs.items()}
    assert got == want and value(on_ray, plan_ray, "d") == 1112
    assert sorted(runs(log_ray)) == ["a", "b", "c", "d", "e"]  # each step ran once
    assert str(os.getpid()) not in {ln.split()[1] for ln in log_ray.read_text().splitlines()}
    assert {r["attempts"] for r in res.values()} == {1}
    assert not list((tmp_path / "jobs").iterdir())  # attempt markers cleaned up


def _fault_plan(log: Path, marker: Path, always: bool = False) -> Plan:
    """The diamond, plus a batch of three same-shape steps p, q, s (one Ray task, in that order)
    where q kills its worker: p has finished and s has not started when it dies; r after q."""
    plan = diamond(log)
    cfg = {"log": str(log), "sleep": 0.0, "fail": False}
    plan.add(Step("t", "p", {**cfg, "value": 7}, batch_key="pqs", fn=FN))
    q = plan.add(Step("t", "q", {**cfg, "value": 20, "marker": str(marker), "always": always},
                      batch_key="pqs", fn=KILLER))
    plan.add(Step("t", "s", {**cfg, "value": 4000}, batch_key="pqs", fn=FN))
    plan.add(Step("t", "r", {**cfg, "value": 300}, {"x": q}, fn=FN))
    return plan


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_redone(cluster, tmp_path):
    """Only q, which was running, is charged a retry; p (finished) is kept, s (not started) runs
    again free."""
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = _fault_plan(log, tmp_path / "killed-once")
    summary, res = _run(plan, store, _ray(cluster, tmp_path, retries=2))
    key = {s.name: s.key for s in plan}
    assert not summary.failed and not summary.blocked and sorted(summary.done) == sorted(key.values())
    assert summary.retried == {key["q"]: 1}
    assert res[key["p"]].get("skipped")  # p finished in the killed task: booked done, not run again
    assert {res[key[n]]["attempts"] for n in "abcdeqsr"} == {1}  # Ray itself retries nothing
    lines = log.read_text().splitlines()
    assert [ln.split()[0] for ln in lines].count("q:start") == 2  # killed once, run again
    assert sorted(runs(log)) == sorted(["a", "b", "c", "d", "e", "p", "q:start", "q:start", "q", "s", "r"])
    assert all(store.is_done(k) for k in key.values())  # nothing lost
    assert value(store, plan, "q") == 20 and value(store, plan, "r") == 320 and value(store, plan, "d") == 1112
    assert store.record(key["q"])["attempt"] == 2 and store.record(key["s"])["attempt"] == 1
    partial = store.root / "steps" / "t" / ".partial"
    assert not partial.exists() or not any(partial.iterdir())  # no step left half-done


def test_a_killed_batch_without_retries_fails_only_the_step_that_died(cluster, tmp_path):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = _fault_plan(log, tmp_path / "killed-once")
    summary, _ = _run(plan, store, _ray(cluster, tmp_path, retries=0))
    key = {s.name: s.key for s in plan}
    assert list(summary.failed) == [key["q"]] and summary.blocked == [key["r"]] and summary.retried == {}
    assert sorted(summary.done) == sorted(key[n] for n in "abcdeps")
    assert {n for n, k in key.items() if store.is_done(k)} == set("abcdeps")  # the summary is the store
    assert runs(log).count("p") == 1 and runs(log).count("s") == 1  # p kept, s run once after
    assert store.state(key["q"]) == "failed"


def test_exhausted_retries_fail_the_batch_with_one_line(cluster, tmp_path, capfd):
    log, store = tmp_path / "log", Store(tmp_path / "store")
    plan = _fault_plan(log, tmp_path / "marker", always=True)
    summary, res = _run(plan, store, _ray(cluster, tmp_path, retries=1))
    key = {s.name: s.key for s in plan}
    assert list(summary.failed) == [key["q"]] and summary.blocked == [key["r"]]
    assert summary.retried == {key["q"]: 1}
    assert sorted(summary.done) == sorted(key[n] for n in "abcdeps")
    reason = summary.failed[key["q"]]
    assert "Ray worker running it died" in reason and "after 2 attempts" in reason and "\n" not in reason
    assert [ln.split()[0] for ln in log.read_text().splitlines()].count("q:start") == 2  # bounded
    assert store.state(key["q"]) == "failed" and store.failure(key["q"])["reason"] == reason
    assert "Traceback" not in capfd.readouterr().err


def test_a_gpu_request_the_cluster_cannot_meet_fails_at_once(cluster, tmp_path):
    store = Store(tmp_path / "store")
    plan = Plan()
    plan.add(Step("t", "g", {"value": 1, "log": str(tmp_path / "log")}, fn=FN, gpus=1))
    summary, _ = _run(plan, store, _ray(cluster, tmp_path))
    assert "needs 1 GPU(s)" in next(iter(summary.failed.values()))
    assert not (tmp_path / "log").exists()  # never started


def _listeners(pids: set[int]) -> list[tuple[str, int]]:
    psutil = oracle("psutil")  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)
    out = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        out += [(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def test_every_ray_listener_is_on_loopback(cluster, tmp_path):
    psutil = oracle("psutil")
    head = psutil.Process(cluster[1].pid)
    backend = RayBackend(1)  # no address: a private Ray started by this process
    try:
        mine = psutil.Process()
        pids = {mine.pid, *(p.pid for p in mine.children(recursive=True)),
                *(p.pid for p in head.children(recursive=True))}
        found = _listeners(pids)
    finally:
        backend.shutdown()
    assert len(found) >= 4  # the GCS and raylet of both clusters at least
    assert all(is_loopback(ip) for ip, _ in found), found


def test_a_listener_off_loopback_is_found(tmp_path):
    """The check the backend runs after starting Ray, shown a child listening on all interfaces."""
    from types import SimpleNamespace

    from proxyscale.run.backends.ray import _exposed

    fake = SimpleNamespace(util=SimpleNamespace(get_node_ip_address=lambda: "127.0.0.1"))
    ready = tmp_path / "port"
    child = subprocess.Popen([sys.executable, "-c", (
        "import socket, sys, time; s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(); "
        f"open({str(ready)!r}, 'w').write(str(s.getsockname()[1])); time.sleep(60)")])
    try:
        while not ready.exists() or not ready.read_text():
            time.sleep(0.05)
        assert _exposed(fake, started_here=True) == f"0.0.0.0:{ready.read_text()}"
        assert _exposed(fake, started_here=False) == ""
    finally:
        child.kill()
        child.wait()
    assert _exposed(fake, started_here=True) == ""
    fake.util.get_node_ip_address = lambda: "192.0.2.7"
    assert _exposed(fake, started_here=False) == "192.0.2.7"


def test_configuration_errors_are_one_line(monkeypatch):
    port = _free_port()
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster at 127.0.0.1"):
        RayBackend(1, address=f"127.0.0.1:{port}")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'proxyscale\[ray\]'"):
        RayBackend(1)
    with pytest.raises(ConfigError, match="retries"):
        RayBackend(1, retries=-1)
    with pytest.raises(ConfigError, match="retries ≥ 0"):
        ExecutorSpec(retries=-1)


SCHEDULING = ("wall_s", "batch_wall_s", "tokens_per_s", "batched_with")  # timings; how many models shared a worker


def _without_timings(x):
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k not in SCHEDULING}
    return [_without_timings(v) for v in x] if isinstance(x, list) else x


def _step_files(root: Path) -> dict[str, object]:
    """Every file of every step: JSON without timings and batch sizes, anything else as bytes."""
    return {str(p.relative_to(root)): _without_timings(read_json(p)) if p.suffix == ".json" else p.read_bytes()
            for p in sorted((root / "steps").rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_real_study_on_a_private_ray_equals_the_local_backend(tmp_path, text_sources, monkeypatch):
    """The tiny end-to-end scaling study (64 steps: data, 18 models, evaluations, analysis) on the
    ray backend with no address and on the local backend: the same files (weights, losses, tables
    bit for bit), but for timings and how many models happened to train together."""
    from proxyscale.api import run_study

    monkeypatch.syspath_prepend(str(HERE.parent / "studies"))
    from test_scaling_end_to_end import SPEC

    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC.format(root=text_sources))
    for backend in ("local", "ray"):
        run_study(spec, tmp_path / backend, workers=2, backend=backend, progress=False)
    local, on_ray = _step_files(tmp_path / "local"), _step_files(tmp_path / "ray")
    assert len(local) > 300 and local == on_ray


def test_a_data_parallel_step_is_one_task_holding_its_gpus():
    """A batch with a step of ``ranks: 2`` on CUDA (Step.gpus = 2) asks Ray for both GPUs in one
    task (whose worker starts torchrun on that node); its threads become CPUs, capped by a node's."""
    opts = task_options([{"gpus": 2, "ranks": 2}, {"gpus": 0}], threads=8, max_cpus=4)
    assert opts == {"num_cpus": 4, "num_gpus": 2.0, "max_retries": 0, "retry_exceptions": False}
    assert task_options([{}], threads=1, max_cpus=16)["num_gpus"] == 0.0


def test_a_selection_task_that_can_use_a_gpu_asks_for_one_where_the_cluster_has_them():
    """DsDm's featurisation tasks (gpu=True) ask Ray for one whole GPU each on a cluster with GPUs,
    so Ray spreads them over the GPUs; elsewhere, and for every other phase, one CPU and no GPU."""
    assert map_task_options(True, 4.0) == {"num_cpus": 1, "num_gpus": 1, "max_retries": 0}
    assert map_task_options(True, 0) == {"num_cpus": 1, "num_gpus": 0, "max_retries": 0}
    assert map_task_options(False, 4.0) == {"num_cpus": 1, "num_gpus": 0, "max_retries": 0}


def test_a_two_rank_step_on_ray_equals_the_local_backend(cluster, tmp_path, monkeypatch):
    """A step of ``ranks: 2`` (a tiny GPT, 2 gloo ranks under torchrun started by the task's
    worker) on the Ray cluster: the same weights and losses as on the local pool."""
    import numpy as np
    import torch
    from _ddp_steps import config

    from proxyscale.store import load_weights

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))  # the local pool's ranks
    plan = Plan()
    key = plan.add(Step("t", "m", config(tmp_path / "log"), fn="_ddp_steps:launch", ranks=2))
    local, on_ray = Store(tmp_path / "local"), Store(tmp_path / "ray")
    s_local, _ = _run(plan, local, make_backend("local", 1))
    s_ray, res = _run(plan, on_ray, _ray(cluster, tmp_path))
    assert s_local.done == s_ray.done == [key] and not s_ray.failed and res[key]["attempts"] == 1
    a, b = local.final_dir(key), on_ray.final_dir(key)
    assert read_json(b / "train.json")["ranks"] == 2 and read_json(b / "train.json")["train_mode"] == "ddp"
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert sorted(wa) == sorted(wb)
    for name in wa:  # the 2-rank = 1-rank tolerance (tests/train/test_train_ddp.py)
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(b / "losses.npy"), np.load(a / "losses.npy"), rtol=1e-6)
