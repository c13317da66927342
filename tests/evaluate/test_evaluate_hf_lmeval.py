"""Oracle: lm-evaluation-harness 0.4.13 scores tiny proxyscale-trained models (exported with their
tokenizer) on local tasks built from a text test set; its sample logs, read by data/lmeval.py,
give the same per-example log-likelihoods as evaluate/hf.py on the same checkpoints and texts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tiny_lms import exported, text_test_set, tiny_tokenizer, train_tiny

from oracles import oracle
from proxyscale.data.lmeval import read_lmeval
from proxyscale.evaluate.hf import evaluate_hf

torch.set_num_threads(1)
MODELS = {"w32": (32, 0), "w48": (48, 1)}  # name -> (width, seed)
TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: {output_type}
doc_to_text: "{{{{context}}}}"
{target}
target_delimiter: ""
metric_list:
{metrics}
"""


def _write_task(root, name, test_set, output_type):
    """A local task over ``test_set``'s text: context then (each) continuation, no delimiter."""
    rows = [{"id": e.example_id, "context": e.context_text, "choices": list(e.texts),
             "continuation": e.texts[e.label], "label": e.label} for e in test_set.examples]
    data = root / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if output_type == "multiple_choice":
        target, metrics = 'doc_to_choice: "{{choices}}"\ndoc_to_target: label', "  - metric: acc\n  - metric: acc_norm"
    else:
        target, metrics = 'doc_to_target: "{{continuation}}"', "  - metric: perplexity"
    text = TASK_YAML.format(name=name, data=data, cache=root / "cache", output_type=output_type, target=target,
                            metrics=metrics)
    (root / f"{name}.yaml").write_text(text, encoding="utf-8")


def _lm_eval_run(lm_eval, model_dir, tasks_dir, out):
    """What ``lm_eval --model hf --log_samples --output_path OUT`` writes, through its Python API."""
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(out))
    res = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32",
                                  tasks=["ps_lm", "ps_choice"], device="cpu", batch_size=4, log_samples=True,
                                  task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
                                  evaluation_tracker=tracker)
    samples = res.pop("samples")
    tracker.save_results_aggregated(results=res, samples=samples)
    for task, logged in samples.items():
        tracker.save_results_samples(task_name=task, samples=logged)
    return next(out.rglob("results_*.json"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        yield _runs(oracle("lm_eval"), tmp_path_factory)


def _runs(lm_eval, tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    tok = tiny_tokenizer()
    sets = {"ps_lm": text_test_set(tok, "lm", 6), "ps_choice": text_test_set(tok, "choice", 6)}
    (root / "tasks").mkdir()
    _write_task(root / "tasks", "ps_lm", sets["ps_lm"], "loglikelihood")
    _write_task(root / "tasks", "ps_choice", sets["ps_choice"], "multiple_choice")
    dirs, results = {}, {}
    for name, (width, seed) in MODELS.items():
        run = train_tiny(root / f"run-{name}", tok, seed=seed, d_model=width)
        dirs[name] = exported(run, tok, root / f"hf-{name}")
        results[name] = _lm_eval_run(lm_eval, dirs[name], root / "tasks", root / f"out-{name}")
    return sets, dirs, results


@pytest.mark.parametrize("task", ["ps_lm", "ps_choice"])
def test_lmeval_logs_equal_evaluate_hf(runs, task):
    sets, dirs, results = runs
    logged = read_lmeval(results, task, id_field="id")
    assert sorted(set(logged.model)) == sorted(MODELS) and set(logged.test_set) == {task}
    worst = 0.0
    for name, d in dirs.items():
        ours = evaluate_hf(d, sets[task], device="cpu").set_index("example_id")
        theirs = logged[logged.model == name].set_index("example_id").loc[ours.index]
        rel = np.abs(theirs.loss_sum - ours.loss_sum) / ours.loss_sum
        worst = max(worst, float(rel.max()))
        np.testing.assert_allclose(theirs.loss_sum, ours.loss_sum, rtol=1e-4)
        np.testing.assert_array_equal(theirs.bytes, ours.bytes)
        np.testing.assert_allclose(theirs.bpb, ours.bpb, rtol=1e-4)
        if task == "ps_choice":
            np.testing.assert_allclose(theirs.correct_prob, ours.correct_prob, rtol=1e-3, atol=1e-12)
            np.testing.assert_array_equal(theirs.accuracy, ours.accuracy)
            np.testing.assert_array_equal(theirs.acc_norm, ours.acc_norm)
    print(f"{task}: max relative difference of loss_sum, lm-eval vs evaluate_hf: {worst:.2e}")
    assert logged.loss_sum.min() > 1.0  # real losses of barely trained models
