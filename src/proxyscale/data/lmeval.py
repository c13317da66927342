"""Per-example evidence from lm-evaluation-harness 0.4.x sample logs (``--log_samples``).

A run writes ``results_<timestamp>.json`` (``versions``, ``n-shot`` and ``configs`` per task)
and, beside it, one ``samples_<task>_<timestamp>.jsonl`` per task: one JSON line per document
with ``doc_id``, ``doc``, ``target`` (a string), ``arguments`` (``{"gen_args_<i>": {"arg_0":
context, "arg_1": continuation}}``, one per request), ``resps`` / ``filtered_resps`` (per
request ``[log-likelihood, is-greedy]``, as strings), ``doc_hash`` and the task's per-document
metrics (``acc``, ``acc_norm`` ...).

Per document (:func:`read_lmeval`):

- ``loglikelihood``: the one request's continuation is the gold one: ``loss_sum`` = −its
  log-likelihood; ``accuracy`` = lm-eval's ``acc`` (is it the greedy continuation);
- ``multiple_choice``: one request per choice, the gold index in ``target``: ``loss_sum`` = −the
  gold choice's log-likelihood; ``correct_prob`` = softmax over the choices' summed
  log-likelihoods at the gold index; ``accuracy`` / ``acc_norm`` = the logged ``acc`` /
  ``acc_norm`` (lm-eval's: ``acc_norm`` divides by the choice's length in characters), else
  ``accuracy`` = argmax == gold and ``acc_norm`` NaN;
- ``loglikelihood_rolling``: ``loss_sum`` = −the document's log-likelihood, bytes from its
  logged ``bits_per_byte`` pair when the task has that metric;
- ``generate_until`` carries no log-likelihood and is refused.

``bytes`` is the UTF-8 length of the gold continuation as scored (with lm-eval's target
delimiter) and ``bpb = loss_sum / (ln 2 · bytes)``. The filtered responses are read (the
``filter`` lm-eval applied; for these output types the identity).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from ..errors import DataError

COLUMNS = ("model", "test_set", "example_id", "loss_sum", "bytes", "bpb", "correct_prob", "accuracy", "acc_norm")
SCORED = ("loglikelihood", "multiple_choice", "loglikelihood_rolling")


@dataclass(frozen=True)
class TaskRun:
    """One model's run of one task: its results file, samples file and settings."""

    model: str
    task: str
    results: Path
    samples: Path
    output_type: str
    version: Any
    n_shot: Any


def results_file(path: str | Path) -> Path:
    """``path`` if it is a results JSON, or the one ``results_*.json`` in the directory ``path``."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataError(f"{p}: no such lm-eval output; give the results_<timestamp>.json file or its directory")
    found = sorted(p.glob("results_*.json"))
    if len(found) != 1:
        names = ", ".join(f.name for f in found[:5]) or "none"
        raise DataError(f"{p}: holds {len(found)} lm-eval results files ({names}); give one results_<timestamp>.json")
    return found[0]


def task_run(model: str, path: str | Path, task: str) -> TaskRun:
    """The run of ``task`` recorded by the results file at (or in) ``path``."""
    res = results_file(path)
    try:
        data = json.loads(res.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{res}: not a readable lm-eval results JSON ({type(e).__name__}); give the "
                        "results_<timestamp>.json lm-eval wrote") from None
    configs = data.get("configs") if isinstance(data, dict) else None
    if not isinstance(configs, dict) or task not in configs:
        have = ", ".join(sorted(configs)) if isinstance(configs, dict) else "none"
        raise DataError(f"{res}: no task '{task}' in this lm-eval run (it has: {have}); give a run of that task")
    stamp = res.stem.removeprefix("results_")
    samples = res.with_name(f"samples_{task}_{stamp}.jsonl")
    if not samples.is_file():
        raise DataError(f"{samples}: missing; re-run lm-eval with --log_samples (and --output_path) to keep samples")
    cfg = configs[task]
    return TaskRun(model, task, res, samples, str(cfg.get("output_type", "")),
                   data.get("versions", {}).get(task), data.get("n-shot", {}).get(task, cfg.get("num_fewshot")))


def iter_samples(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a samples file, one per line (a bad line: one line naming it)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise DataError(f"{path}:{n}: not a JSON line; give the samples file lm-eval wrote") from None
            if not isinstance(rec, dict) or "doc_id" not in rec:
                raise DataError(f"{path}:{n}: no doc_id; give an lm-eval 0.4.x --log_samples file")
            yield rec


def _lls(rec: dict[str, Any], where: str) -> np.ndarray:
    """The log-likelihood of each request of a sample (its filtered responses)."""
    resps = rec.get("filtered_resps", rec.get("resps"))
    try:
        flat = [r[0] if isinstance(r, list) and r and isinstance(r[0], list) else r for r in resps]
        return np.array([float(r[0] if isinstance(r, list) else r) for r in flat], dtype=np.float64)
    except (TypeError, ValueError, IndexError):
        raise DataError(f"{where}: responses are not log-likelihoods; give a loglikelihood or "
                        "multiple_choice task's samples") from None


def _continuation(rec: dict[str, Any], i: int) -> Optional[str]:
    args = rec.get("arguments")
    if isinstance(args, dict):
        req = args.get(f"gen_args_{i}", {})
        return req.get("arg_1") if isinstance(req, dict) else None
    if isinstance(args, list) and i < len(args) and len(args[i]) > 1:
        return args[i][1]
    return None


def _metric(rec: dict[str, Any], name: str) -> float:
    value = rec.get(name)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def sample_row(run: TaskRun, rec: dict[str, Any], id_field: Optional[str]) -> dict[str, Any]:
    """One document's row (see the module docstring)."""
    where = f"{run.samples} doc {rec['doc_id']}"
    lls = _lls(rec, where)
    row = {"model": run.model, "test_set": run.task, "example_id": _example_id(run, rec, id_field),
           "correct_prob": math.nan, "accuracy": _metric(rec, "acc"), "acc_norm": math.nan}
    gold, nbytes = 0, math.nan
    if run.output_type == "multiple_choice":
        if "acc_mutual_info" in rec.get("metrics", []):
            lls = lls[: len(lls) // 2]  # the second half are the unconditional ones
        try:
            gold = int(str(rec.get("target")))
        except ValueError:
            raise DataError(f"{where}: target {rec.get('target')!r} is not one choice index; tasks with several "
                            "gold choices are not supported") from None
        if not 0 <= gold < len(lls):
            raise DataError(f"{where}: gold index {gold} but {len(lls)} choices; give the samples lm-eval wrote")
        p = np.exp(lls - lls.max())
        row.update(correct_prob=float(p[gold] / p.sum()), acc_norm=_metric(rec, "acc_norm"))
        if math.isnan(row["accuracy"]):
            row["accuracy"] = float(np.argmax(lls) == gold)
    if run.output_type == "loglikelihood_rolling":
        bpb = rec.get("bits_per_byte")
        nbytes = float(bpb[1]) if isinstance(bpb, list) and len(bpb) == 2 else math.nan
    else:
        cont = _continuation(rec, gold)
        nbytes = float(len(cont.encode("utf-8"))) if isinstance(cont, str) else math.nan
    loss_sum = -float(lls[gold])
    bpb_value = loss_sum / (math.log(2) * nbytes) if nbytes and not math.isnan(nbytes) else math.nan
    return {**row, "loss_sum": loss_sum, "bytes": nbytes, "bpb": bpb_value}


def _example_id(run: TaskRun, rec: dict[str, Any], id_field: Optional[str]) -> str:
    if id_field is None:
        return f"{run.task}/{rec['doc_id']}"
    doc = rec.get("doc")
    if not isinstance(doc, dict) or id_field not in doc:
        raise DataError(f"{run.samples} doc {rec['doc_id']}: its document has no field '{id_field}'; "
                        "give an id_field the task's documents have, or none (ids from doc_id)")
    return str(doc[id_field])


def read_lmeval(runs: Mapping[str, str | Path], task: str, *, id_field: Optional[str] = None):
    """The per-document table (:data:`COLUMNS`) of ``task`` for each model in ``runs`` (model ->
    its results JSON or the directory holding it). Refused in one line: a generation task; runs
    whose task version or number of few-shot examples differ; models evaluated on different
    documents. ``id_field``: take ``example_id`` from that field of each document (default
    ``<task>/<doc_id>``)."""
    import pandas as pd

    if not runs:
        raise DataError("no lm-eval runs given; give at least one model's results file")
    tr = {m: task_run(m, p, task) for m, p in runs.items()}
    for r in tr.values():
        if r.output_type == "generate_until":
            raise DataError(f"task '{task}' of model {r.model} is generate_until: its samples hold generated text, "
                            "no log-likelihood to score; give loglikelihood or multiple_choice tasks")
        if r.output_type not in SCORED:
            raise DataError(f"task '{task}' of model {r.model} has output_type '{r.output_type}'; "
                            f"only {', '.join(SCORED)} carry log-likelihoods")
    _same_setting(tr, "task version", lambda r: r.version)
    _same_setting(tr, "num_fewshot", lambda r: r.n_shot)
    docs = {m: list(iter_samples(r.samples)) for m, r in tr.items()}
    _same_documents(task, docs)
    rows = [sample_row(tr[m], rec, id_field) for m, recs in docs.items()
            for rec in sorted(recs, key=lambda x: int(x["doc_id"]))]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _same_setting(runs: Mapping[str, TaskRun], what: str, get) -> None:
    values = {m: get(r) for m, r in runs.items()}
    if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
        task = next(iter(runs.values())).task
        listing = ", ".join(f"{m}: {v}" for m, v in values.items())
        raise DataError(f"task '{task}': the {what} differs across models ({listing}); compare runs of the same "
                        f"task {what}")


def _same_documents(task: str, docs: Mapping[str, list[dict[str, Any]]]) -> None:
    """Every model saw the same documents (same doc_ids, same doc hashes), each once."""
    hashes = {}
    for m, recs in docs.items():
        ids = [int(r["doc_id"]) for r in recs]
        if len(set(ids)) != len(ids):
            raise DataError(f"task '{task}' of model {m}: a doc_id appears twice in its samples; give the samples "
                            "of one lm-eval run (without repeats)")
        hashes[m] = {int(r["doc_id"]): r.get("doc_hash") for r in recs}
    (m0, h0), *rest = hashes.items()
    for m, h in rest:
        if set(h) != set(h0):
            gone = sorted(set(h0) ^ set(h))[0]
            raise DataError(f"task '{task}': documents differ across models: {m0} has {len(h0)} documents, {m} has "
                            f"{len(h)} (doc {gone} is in only one); evaluate every model on the same documents "
                            "(same --limit)")
        bad = next((d for d in sorted(h) if h[d] != h0[d]), None)
        if bad is not None:
            raise DataError(f"task '{task}': document {bad} differs between {m0} and {m} (doc_hash); evaluate every "
                            f"model on the same documents ({len(h0)} documents each)")
