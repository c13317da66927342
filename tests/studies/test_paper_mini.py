"""configs/paper-mini.yaml: the paper's study structure with every model trained as 2 data-parallel
ranks (gloo on the CPU); its analysis equals the 1-rank study's within float tolerance."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from proxyscale.store import Store, read_json, read_table
from proxyscale.studies import load_study
from proxyscale.studies.scaling.plan import build_plan

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "proxyscale" / "configs"
TRAINS = ("train", "window_train")


def one_rank(tmp_path: Path) -> Path:
    """The same study with ranks left at 1 (its own name, so both analyses sit in one store)."""
    raw = yaml.safe_load((CONFIGS / "paper-mini.yaml").read_text())
    raw["name"] = "paper-mini-1rank"
    for r in raw["ladder"]["rungs"]:
        r.pop("ranks")
    path = tmp_path / "paper-mini-1rank.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_model_of_paper_mini_is_a_two_rank_job_of_its_own(tmp_path):
    plan = build_plan(load_study(CONFIGS / "paper-mini.yaml")[1])
    steps = [s for s in plan if s.kind in TRAINS]
    assert len(steps) == 8  # 2 rungs × (3 distributions + 1 selection), one seed each
    kinds = {s.kind for s in steps}
    assert kinds == set(TRAINS) and {s.info.get("rung") for s in steps if s.kind == "train"} == {"L1d8", "L1d16"}
    for s in steps:
        assert s.config["ranks"] == 2 and s.ranks == 2 and s.to_payload()["ranks"] == 2
        assert s.batch_key is None and "stack_size" not in s.config  # never stacked
        assert s.gpus == 0.0  # device auto: the plan asks no backend for GPUs
        assert s.config["train"]["micro_batch_size"] == 4
    single = build_plan(load_study(one_rank(tmp_path))[1])
    one = {s.key for s in single if s.kind in TRAINS}
    assert not one & {s.key for s in steps}  # another number of ranks: other train steps...
    data = {s.key for s in plan if s.kind in ("corpus", "tokenizer", "shard", "testset", "pool_windows")}
    assert data and data <= {s.key for s in single}  # ...on the same data steps
    assert all("ranks" not in s.config for s in single if s.kind in TRAINS)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxyscale.cli", *args], capture_output=True, text=True,
                          timeout=1500)


def _summary(store: Store, name: str):
    key = next(s.key for s in build_plan(load_study(name)[1]) if s.kind == "analyze")
    return read_table(store.final_dir(key) / "summary.parquet").sort_values(["test_set", "model"])


@pytest.mark.slow  # about 2 min on 2 idle cores (8 torchrun jobs of 2 ranks); more on a busy machine
def test_paper_mini_on_two_ranks_gives_the_one_rank_analysis(tmp_path):
    store = tmp_path / "store"
    for spec in (CONFIGS / "paper-mini.yaml", one_rank(tmp_path)):
        r = _cli("run", str(spec), "--store", str(store), "-j", "1", "--no-progress")
        assert r.returncode == 0, r.stderr[-3000:]
    s = Store(store)
    two, one = _summary(s, CONFIGS / "paper-mini.yaml"), _summary(s, tmp_path / "paper-mini-1rank.yaml")
    assert len(two) == len(one) == 6 and list(two["model"]) == list(one["model"])
    # the models differ by float rounding only (gradients summed in another order); measured
    # differences of R² and Pearson r are ~1e-6, so 1e-3 leaves room and still catches a model
    # trained on other rows or with another loss scale
    for col in ("r2", "pearson", "r2_lo", "r2_hi"):
        np.testing.assert_allclose(two[col].to_numpy(float), one[col].to_numpy(float), atol=1e-3, err_msg=col)
    for col in ("spearman", "decision_accuracy"):  # rank-based: unchanged by tiny differences
        np.testing.assert_array_equal(two[col].to_numpy(float), one[col].to_numpy(float), err_msg=col)
    assert (two.loc[two["kind"] == "neural", "r2"] > 0.3).all()  # a real signal, not noise that matches
    trained = [read_json(p) for p in (store / "steps" / "train").glob("*/train.json")]
    assert sorted(m.get("ranks") for m in trained) == [1] * 6 + [2] * 6


def test_ranks_outside_the_ladder_are_refused_in_one_line():
    from proxyscale.errors import ConfigError
    from proxyscale.studies.fragments.lm_ladder import RungSpec, check_rungs

    rungs = (RungSpec("a", 8, 1, ranks=2), RungSpec("b", 16, 1))
    check_rungs(rungs, "b")  # the scaling study's ladder
    with pytest.raises(ConfigError, match=r"proxies: rung\(s\) \['a'\] set ranks > 1"):
        check_rungs(rungs, "b", "proxies")
