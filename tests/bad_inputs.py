"""Bad inputs tried through the real CLI, each classified by what the user sees.

Every case starts from one tiny valid scaling spec over two local sources, changes one thing
(the spec, a data file, or the command line) and runs ``proxyscale`` in a subprocess (``plan``
and ``run --store``) in a fresh directory with its own HOME and TMPDIR. The outcome is one of:

- ``clean``: non-zero exit, stderr is exactly one ``error: ...`` line, no step ran (``plan``,
  a dry run, may instead exit 0 after printing the line saying why ``run`` would refuse);
- ``traceback``: a Python traceback, or more than one line on stderr;
- ``accepted``: exit 0 for an input that should have been refused;
- ``late``: refused cleanly, but only after steps had run (the store holds step directories);
- ``hang``: still running at the timeout;
- ``escaped``: a file outside the store was created or changed (library caches under
  ``$HOME/.cache``, such as matplotlib's font list, excepted).

Run ``python tests/bad_inputs.py [--timeout 60]`` for the table in docs/reliability.md; the
tests import :data:`CASES`, :func:`make_workspace` and :func:`try_case`.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

SRC = Path(__file__).resolve().parents[1] / "src"

TINY: dict[str, Any] = {
    "name": "tiny",
    "context": 32,
    "heldout_fraction": 0.2,
    "tokenizer": {"vocab_size": 300, "sample_bytes": 60_000},
    "sources": {"prose": {"kind": "local", "path": "{data}/prose", "txt_unit": "file"},
                "doc": {"kind": "local", "path": "{data}/doc.jsonl"}},
    "distributions": {"prose": {"prose": 1}, "mix": {"prose": 1, "doc": 1}},
    "test_sets": {"mixed": {"kind": "lm", "sources": ["prose", "doc"], "n_examples": 12}},
    "ladder": {"tokens_per_param": 1, "reference": "L1d8",
               "rungs": [{"name": "L1d4", "d_model": 4, "n_layers": 1}, {"name": "L1d8", "d_model": 8, "n_layers": 1}]},
    "train": {"batch_size": 4, "lr": 0.01},
    "analysis": {"n_boot": 20, "ngram_orders": [1]},
    "executor": {"workers": 1},
}


def tiny_spec(data: Path) -> dict[str, Any]:
    """The tiny valid spec with its sources under ``data``."""
    spec = copy.deepcopy(TINY)
    for s in spec["sources"].values():
        s["path"] = s["path"].format(data=data)
    return spec


def write_sources(data: Path) -> None:
    """Real text every machine has offline: language-reference topics as ``prose/*.txt`` and
    ``doc.jsonl``."""
    from pydoc_data.topics import topics

    items = sorted(topics.items())
    (data / "prose").mkdir(parents=True, exist_ok=True)
    for i, (_k, v) in enumerate(items[:40]):
        (data / "prose" / f"{i:03d}.txt").write_text(v, encoding="utf-8")
    lines = [json.dumps({"text": v, "id": k}) for k, v in items[40:80]]
    (data / "doc.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_workspace(root: Path) -> Path:
    """``root`` with ``data/`` (the sources), ``home/`` and ``tmp/``; returns ``root``."""
    write_sources(root / "data")
    (root / "home").mkdir(exist_ok=True)
    (root / "tmp").mkdir(exist_ok=True)
    return root


REFUSES = "`proxyscale run` would refuse:"
# Library caches in the user's home (matplotlib's font list) are not outputs; anything else is.
CACHES = ("home/.cache/",)
Mutation = Callable[[dict, Path], Any]  # (spec dict, workspace) -> dict | YAML text | None (spec unchanged)


@dataclass(frozen=True)
class Case:
    """One bad input. ``mutate`` changes the spec (or data in the workspace); ``args`` are extra
    CLI arguments (``{spec}`` and ``{store}`` are filled in); ``argv`` replaces the whole command."""

    name: str
    group: str
    mutate: Optional[Mutation] = None
    args: tuple[str, ...] = ()
    argv: Optional[tuple[str, ...]] = None
    commands: tuple[str, ...] = ("plan", "run")
    bad: bool = True
    at_run: bool = False  # only running can find it out (a diverging loss): steps may have run first


def _set(path: str, value: Any) -> Mutation:
    def mutate(spec: dict, ws: Path) -> dict:
        *parents, last = path.split(".")
        node = spec
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
        return spec
    return mutate


def _data(fn: Callable[[Path], None]) -> Mutation:
    def mutate(spec: dict, ws: Path) -> dict:
        fn(ws / "data")
        return spec
    return mutate


def _rename(section: str, old: str, new: str) -> Mutation:
    def mutate(spec: dict, ws: Path) -> dict:
        spec[section][new] = spec[section].pop(old)
        for mix in spec["distributions"].values():
            if section == "sources" and old in mix:
                mix[new] = mix.pop(old)
        for ts in spec["test_sets"].values():
            if section == "sources":
                ts["sources"] = [new if s == old else s for s in ts["sources"]]
        return spec
    return mutate


def _select(settings: dict) -> Mutation:
    def mutate(spec: dict, ws: Path) -> dict:
        spec["pool"] = {"sources": {"prose": 1, "doc": 1}, "n_windows": 50}
        spec["selections"] = {"sel": {"method": "dsir", "target": "mixed", "n_target": 5, "settings": settings}}
        return spec
    return mutate


def _text(fn: Callable[[str], str]) -> Mutation:
    return lambda spec, ws: fn(yaml.safe_dump(spec, sort_keys=False))


def _point_doc(path_fn: Callable[[Path], Path]) -> Mutation:
    def mutate(spec: dict, ws: Path) -> dict:
        spec["sources"]["doc"]["path"] = str(path_fn(ws / "data"))
        return spec
    return mutate


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(data: Path) -> Path:
        (data / name).write_bytes(content)
        return data / name
    return make


def _symlink(name: str, target: str) -> Callable[[Path], Path]:
    def make(data: Path) -> Path:
        (data / name).symlink_to(target)
        return data / name
    return make


def _empty_dir(data: Path) -> Path:
    (data / "empty").mkdir()
    return data / "empty"


def _other_files_dir(data: Path) -> Path:
    (data / "other").mkdir()
    (data / "other" / "notes.md").write_text("# notes\n")
    return data / "other"


def _select_cli(out: str, *extra: str, pool: str = "{ws}/data/prose") -> tuple[str, ...]:
    """``proxyscale select`` of the workspace's data toward doc.jsonl, writing to ``out``."""
    return ("select", "--method", "random", "--pool", pool, "--target", "{ws}/data/doc.jsonl", "--n", "3",
            "--out", out, *extra)


def _foreign_dir(spec: dict, ws: Path) -> dict:
    """A folder of the user's that happens to hold a manifest.json (not a selection)."""
    (ws / "data" / "mine").mkdir()
    (ws / "data" / "mine" / "manifest.json").write_text('{"mine": true}\n')
    (ws / "data" / "mine" / "notes.txt").write_text("my notes\n")
    return spec


def _earlier_output(foreign: bool) -> Mutation:
    """An earlier proxyscale output in ``store/sel`` (its marker lists its one file); with
    ``foreign``, a file of the user's added to it since."""
    def mutate(spec: dict, ws: Path) -> dict:
        import hashlib

        out = ws / "store" / "sel"
        out.mkdir(parents=True)
        (out / "chosen.txt").write_text("a\n")
        files = {"chosen.txt": {"sha256": hashlib.sha256(b"a\n").hexdigest(), "bytes": 2}}
        (out / ".proxyscale-output.json").write_text(json.dumps({"written_by": "proxyscale", "files": files}))
        if foreign:
            (out / "thesis.tex").write_text("years of work\n")
        return spec
    return mutate


def _finished_then(edit: Callable[[Path], None]) -> Mutation:
    """Run the tiny study to the end in ``<ws>/store`` first, then ``edit`` its analysis step
    (the last step: a re-run of it touches nothing else)."""
    def mutate(spec: dict, ws: Path) -> dict:
        (ws / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(SRC), "HOME": str(ws / "home"), "TMPDIR": str(ws / "tmp")}
        subprocess.run([sys.executable, "-m", "proxyscale.cli", "run", str(ws / "spec.yaml"), "--store",
                        str(ws / "store"), "--no-progress"], env=env, capture_output=True, check=True, timeout=300)
        edit(next((ws / "store" / "steps" / "analyze").glob("[!.]*")))
        return spec
    return mutate


def _nul_pool(spec: dict, ws: Path) -> dict:
    (ws / "data" / "nul").mkdir()
    (ws / "data" / "nul" / "a.txt").write_bytes(b"some text\0more text\n")
    return spec


def _selection_sized(path: str, value: Any) -> Mutation:
    """A valid pool and selection (see ``_select``), then one size changed."""
    def mutate(spec: dict, ws: Path) -> dict:
        return _set(path, value)(_select({})(spec, ws), ws)
    return mutate


def _record_files(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def edit(step: Path) -> None:
        rec = json.loads((step / "_step.json").read_text())
        rec["files"] = change(rec["files"])
        (step / "_step.json").write_text(json.dumps(rec))
    return edit


def _two_trained(spec: dict, ws: Path) -> dict:
    """A store at ``data/runs`` holding two finished train steps (records only: enough to look
    a model up by name)."""
    from proxyscale.store import FORMAT_VERSION

    runs = ws / "data" / "runs"
    (runs / "store.json").parent.mkdir(parents=True)
    (runs / "store.json").write_text(json.dumps({"format_version": FORMAT_VERSION}))
    for leaf in ("L1d4-0a1b2c3d", "L1d8-4e5f6a7b"):
        (runs / "steps" / "train" / leaf).mkdir(parents=True)
        (runs / "steps" / "train" / leaf / "_step.json").write_text(json.dumps({"files": {}, "inputs": {}}))
    return spec


def _suite(change: Callable[[dict, Path], Any] = lambda spec, ws: None, *, loss: Any = None) -> Mutation:
    """A tiny valid suite (3 distributions × 2 scales) over a results table in the workspace, then
    ``change(spec, ws)``; ``loss`` replaces the first row's loss in the table."""
    def mutate(spec: dict, ws: Path) -> dict:
        import pandas as pd

        rows, models = [], []
        for d, dist in enumerate(("web", "code", "books")):
            for s, scale in enumerate(("S", "L")):
                name = f"{dist}-{scale}"
                rows += [{"model": name, "test_set": "held", "example_id": f"e{i}", "loss": 2.0 + d + s + 0.1 * i}
                         for i in range(4)]
                models.append({"name": name, "distribution": dist, "scale": scale, "seed": 0, "params": 10 ** (s + 4),
                               "train_tokens": 2 * 10 ** (s + 5), "reference": scale == "L",
                               "results": str(ws / "data" / "results.csv")})
        table = pd.DataFrame(rows)
        if loss is not None:
            table.loc[0, "loss"] = loss
        table.to_csv(ws / "data" / "results.csv", index=False)
        suite = {"kind": "suite", "name": "tiny-suite", "models": models, "analysis": {"n_boot": 20}}
        change(suite, ws)
        return suite
    return mutate


def _checkpoint(files: Callable[[Path], None]) -> Callable[[dict, Path], None]:
    """The first model becomes a checkpoint directory holding what ``files`` writes, evaluated on
    a test set of the workspace's prose."""
    def change(suite: dict, ws: Path) -> None:
        d = ws / "data" / "ckpt"
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
        files(d)
        suite["models"][0] = {**{k: v for k, v in suite["models"][0].items() if k != "results"}, "checkpoint": str(d)}
        suite["sources"] = {"prose": {"kind": "local", "path": str(ws / "data" / "prose"), "txt_unit": "file"}}
        suite["test_sets"] = {"text": {"kind": "lm", "sources": ["prose"], "n_examples": 12}}
    return change


def _lmeval_runs(second: dict) -> Callable[[dict, Path], None]:
    """The first two models become lm-eval runs of task ``mc``; the second's results differ by ``second``."""
    def change(suite: dict, ws: Path) -> None:
        for i, over in enumerate(({}, second)):
            d = ws / "data" / f"lmeval{i}"
            d.mkdir()
            task = over.get("task", "mc")
            res = {"versions": {task: over.get("version", 1.0)}, "n-shot": {task: 0},
                   "configs": {task: {"task": task, "output_type": "multiple_choice"}}}
            (d / "results_2025.json").write_text(json.dumps(res))
            (d / f"samples_{task}_2025.jsonl").write_text("")
            suite["models"][i] = {**{k: v for k, v in suite["models"][i].items() if k != "results"},
                                  "samples": str(d / "results_*.json")}
        suite["test_sets"] = {"mc": {"task": "mc", "kind": "choice"}}
        suite["analysis"]["metric"] = "correct_prob"
    return change


def _suite_set(key: str, value: Any, index: int | None = None) -> Callable[[dict, Path], None]:
    def change(suite: dict, ws: Path) -> None:
        for i, m in enumerate(suite["models"]):
            if index is None or i == index:
                m[key] = value(m) if callable(value) else value
    return change


def _selection_target(kind: str) -> Mutation:
    """A selection spec (target 'words' of ``kind`` over the prose source), built from the tiny
    spec's sources."""
    def mutate(spec: dict, ws: Path) -> dict:
        keep = ("name", "context", "heldout_fraction", "tokenizer", "sources", "train", "executor")
        out = {k: spec[k] for k in keep}
        out.update(kind="selection", pool={"sources": {"prose": 1, "doc": 1}, "n_windows": 400},
                   targets={"words": {"kind": kind, "sources": ["prose"], "n_target": 3, "n_holdout": 4}},
                   proxies=[{"name": "L1d4", "d_model": 4, "n_layers": 1}],
                   reference={"name": "L1d8", "d_model": 8, "n_layers": 1}, tokens_per_param=1,
                   methods=["random", "dsir"], random_budgets=[1.0, 2.0], n_boot=100)
        return out
    return mutate


def _shards(bad: str) -> Mutation:
    """A sharded pool in data/shards (two JSONL shards) with one bad shard of kind ``bad``."""
    def mutate(spec: dict, ws: Path) -> dict:
        d = ws / "data" / "shards"
        d.mkdir()
        for k in range(2):
            (d / f"s{k}.jsonl").write_text('{"text": "a shard document"}\n')
        if bad == "mixed":
            (d / "s2.txt").write_text("a text shard\n")
        elif bad == "field":
            (d / "s2.jsonl").write_text('{"body": "no text"}\n')
        else:
            (d / "s2.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd not a zstd frame")
        return spec
    return mutate


def _rung_ranks(value: Any) -> Mutation:
    """The reference rung trained as ``value`` data-parallel processes."""
    def mutate(spec: dict, ws: Path) -> dict:
        spec["ladder"]["rungs"][1]["ranks"] = value
        return spec
    return mutate


def _dsdm_shards(bad: str) -> Mutation:
    """A sharded pool in data/shards (two JSONL shards) for sharded DsDm, with ``bad``: an empty
    document in the second shard, or an empty target example in data/target.jsonl."""
    def mutate(spec: dict, ws: Path) -> dict:
        d = ws / "data" / "shards"
        d.mkdir()
        for k in range(2):
            docs = ["a shard document of words", "" if bad == "document" and k else "more words here"]
            (d / f"s{k}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
        target = ["a target example", "" if bad == "target" else "another target"]
        (ws / "data" / "target.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in target))
        return spec
    return mutate


def _dsdm_cli(method: str, workers: str) -> tuple[str, ...]:
    """``proxyscale select`` with sharded DsDm (tiny proxies) of data/shards toward data/target.jsonl."""
    return ("select", "--method", method, "--pool", "{ws}/data/shards", "--target", "{ws}/data/target.jsonl",
            "--n", "2", "--out", "{ws}/sel", "--workers", workers, "--set", "d_model=8", "--set", "n_heads=1",
            "--set", "models=1", "--set", "context=16", "--set", "vocab_size=300", "--set", "k=16")


def _shared_table_without_models(suite: dict, ws: Path) -> None:
    """The suite's shared results table loses its model column."""
    import pandas as pd

    path = ws / "data" / "results.csv"
    pd.read_csv(path).drop(columns=["model"]).to_csv(path, index=False)


CASES: tuple[Case, ...] = (
    Case("valid tiny spec (control)", "control", bad=False),
    # -- command line --------------------------------------------------------------------------
    Case("unknown command", "cli", argv=("frobnicate",), commands=("cli",)),
    Case("run without a spec", "cli", argv=("run",), commands=("cli",)),
    Case("unknown option", "cli", argv=("plan", "{spec}", "--bogus"), commands=("cli",)),
    Case("--workers abc", "cli", argv=("run", "{spec}", "--store", "{store}", "--workers", "abc"), commands=("cli",)),
    Case("--workers -1", "cli", argv=("run", "{spec}", "--store", "{store}", "--workers", "-1"), commands=("cli",)),
    Case("--backend nonsense", "cli", argv=("run", "{spec}", "--store", "{store}", "--backend", "nonsense"),
         commands=("cli",)),
    Case("spec path does not exist", "cli", argv=("plan", "{ws}/nope.yaml"), commands=("cli",)),
    Case("spec path is a directory", "cli", argv=("plan", "{ws}/data"), commands=("cli",)),
    Case("select --set without =", "cli", argv=("select", "--method", "random", "--pool", "{ws}/data/prose",
                                                 "--target", "{ws}/data/doc.jsonl", "--n", "2", "--out",
                                                 "{store}/sel", "--set", "novalue"), commands=("cli",)),
    Case("select --n -3", "cli", argv=("select", "--method", "random", "--pool", "{ws}/data/prose",
                                        "--target", "{ws}/data/doc.jsonl", "--n", "-3", "--out", "{store}/sel"),
         commands=("cli",)),
    Case("attribute --n-train abc", "cli", argv=("attribute", "--n-train", "abc"), commands=("cli",)),
    Case("status of a store that is a file", "cli", argv=("status", "{spec}", "--store", "{ws}/data/doc.jsonl"),
         commands=("cli",)),
    # -- YAML and types ------------------------------------------------------------------------
    Case("empty spec file", "yaml", _text(lambda t: "")),
    Case("spec is a list", "yaml", _text(lambda t: "- a\n- b\n")),
    Case("broken YAML", "yaml", _text(lambda t: t + "\n  bad: [unclosed\n")),
    Case("repeated top-level key", "yaml", _text(lambda t: t + "name: other\n")),
    Case("repeated nested key", "yaml", _text(lambda t: t.replace("  lr: 0.01", "  lr: 0.01\n  lr: 0.02"))),
    Case("unknown top-level key", "yaml", _set("bogus", 1)),
    Case("unknown kind", "yaml", _set("kind", "nonsense")),
    Case("train.batch_size: \"abc\"", "types", _set("train.batch_size", "abc")),
    Case("train.batch_size: 0", "types", _set("train.batch_size", 0)),
    Case("train.batch_size: 2.5", "types", _set("train.batch_size", 2.5)),
    Case("train.lr: .nan", "types", _text(lambda t: t.replace("lr: 0.01", "lr: .nan"))),
    Case("train.lr: .inf", "types", _text(lambda t: t.replace("lr: 0.01", "lr: .inf"))),
    Case("train.lr: -1", "types", _set("train.lr", -1)),
    Case("train: a list", "types", _set("train", [1, 2])),
    Case("seed: \"x\"", "types", _set("seed", "x")),
    Case("heldout_fraction: 1.5", "types", _set("heldout_fraction", 1.5)),
    Case("analysis.n_boot: 0", "types", _set("analysis.n_boot", 0)),
    Case("analysis.ngram_orders: [0]", "types", _set("analysis.ngram_orders", [0])),
    Case("analysis.ngram_orders: [4]", "types", _set("analysis.ngram_orders", [4])),
    Case("executor.workers: -1", "types", _set("executor.workers", -1)),
    Case("executor: unknown key", "types", _set("executor.bogus", 1)),
    Case("corpus: unknown key (all sources local)", "types", _set("corpus", {"bogus": 1})),
    Case("corpus.domains: unknown domain", "types", _set("corpus.domains", ["nodomain"])),
    Case("test set n_examples: 1000000", "types", _set("test_sets.mixed.n_examples", 1_000_000)),
    Case("test set n_examples: 0", "types", _set("test_sets.mixed.n_examples", 0)),
    Case("rung n_heads: 0", "types", _set("ladder.rungs", [{"name": "a", "d_model": 4, "n_layers": 1, "n_heads": 0},
                                                          {"name": "L1d8", "d_model": 8, "n_layers": 1}])),
    Case("selection settings: unknown key", "types", _select({"bogus": 1})),
    Case("selection settings: work_dir outside the store", "types", _select({"work_dir": "/tmp/elsewhere"})),
    # -- names ---------------------------------------------------------------------------------
    Case("source named \"\"", "names", _rename("sources", "doc", "")),
    Case("source named ../x", "names", _rename("sources", "doc", "../x")),
    Case("source named .hidden", "names", _rename("sources", "doc", ".hidden")),
    Case("distribution named a:b", "names", _rename("distributions", "mix", "a:b")),
    Case("test set named ../../evil", "names", _rename("test_sets", "mixed", "../../evil")),
    Case("study named ../evil", "names", _set("name", "../evil")),
    Case("rung named a/b", "names", _set("ladder.rungs", [{"name": "a/b", "d_model": 4, "n_layers": 1},
                                                          {"name": "L1d8", "d_model": 8, "n_layers": 1}])),
    # -- sizes (resource estimate) -------------------------------------------------------------
    Case("d_model: 1e9", "sizes", _set("ladder.rungs", [{"name": "L1d4", "d_model": 4, "n_layers": 1},
                                                        {"name": "L1d8", "d_model": 1_000_000_000, "n_layers": 1}])),
    # A long context is a heavy plan, not an impossible one: with stacks sized for the cores each
    # small model trains alone through memory-efficient attention, and the preflight estimates
    # ~19 GiB and ~1 h of compute on 2 cores; `plan` must say so (running it is not a bad-input test).
    Case("context: 100000 (heavy, within this machine)", "sizes", _set("context", 100_000), bad=False,
         commands=("plan",)),
    Case("tokenizer.vocab_size: 1000000", "sizes", _set("tokenizer.vocab_size", 1_000_000)),
    Case("tokenizer.vocab_size: 10000000", "sizes", _set("tokenizer.vocab_size", 10_000_000)),
    Case("ladder.tokens_per_param: 1e12", "sizes", _set("ladder.tokens_per_param", 1e12)),
    Case("train.batch_size: 10000000", "sizes", _set("train.batch_size", 10_000_000)),
    # -- sources -------------------------------------------------------------------------------
    Case("source: unknown key", "sources", _set("sources.doc.bogus", 1)),
    Case("source: unknown kind", "sources", _set("sources.doc.kind", "ftp")),
    Case("source: embedded, unknown domain", "sources",
         _set("sources.doc", {"kind": "embedded", "domain": "nodomain"})),
    Case("source: local without path", "sources", _set("sources.doc", {"kind": "local"})),
    Case("source: path does not exist", "sources", _point_doc(lambda d: d / "missing.jsonl")),
    Case("source: empty file", "sources", _point_doc(_write("empty.jsonl", b""))),
    Case("source: blank-only .txt", "sources", _point_doc(_write("blank.txt", b"\n\n  \n"))),
    Case("source: non-UTF-8 .txt", "sources", _point_doc(_write("latin.txt", "caf\xe9 cr\xe8me\n".encode("latin-1")))),
    Case("source: binary .jsonl", "sources", _point_doc(_write("bin.jsonl", bytes(range(256)) * 4))),
    Case("source: bad JSONL line", "sources", _point_doc(_write("bad.jsonl", b'{"text": "ok"}\n{not json\n'))),
    Case("source: JSONL without text field", "sources", _point_doc(_write("notext.jsonl", b'{"body": "x"}\n'))),
    Case("source: JSONL of non-objects", "sources", _point_doc(_write("list.jsonl", b'[1, 2]\n'))),
    Case("source: damaged .parquet", "sources", _point_doc(_write("bad.parquet", b"PAR1 not really"))),
    Case("source: unsupported suffix", "sources", _point_doc(_write("data.csv", b"text\nhello\n"))),
    Case("source: empty directory", "sources", _point_doc(_empty_dir)),
    Case("source: directory without text files", "sources", _point_doc(_other_files_dir)),
    Case("source: symlink to /etc", "sources", _point_doc(_symlink("etc", "/etc"))),
    Case("source: symlink to /etc/passwd", "sources", _point_doc(_symlink("passwd.txt", "/etc/passwd"))),
    Case("source: /proc/self/environ", "sources", _point_doc(lambda d: Path("/proc/self/environ"))),
    Case("source: dangling symlink", "sources", _point_doc(_symlink("gone.jsonl", "/nonexistent/x.jsonl"))),
    Case("source: max_docs 0", "sources", _set("sources.doc.max_docs", 0)),
    # -- training ------------------------------------------------------------------------------
    Case("diverging run (lr: 1e6)", "training", _set("train", {"batch_size": 4, "lr": 1e6, "grad_clip": 0}),
         commands=("run",), at_run=True),
    # -- outputs (one output policy) and one read policy for select ---------------------------
    Case("select --out a folder of the user's holding manifest.json", "outputs", _foreign_dir,
         argv=_select_cli("{ws}/data/mine"), commands=("cli",)),
    Case("select --out = --pool", "outputs", argv=_select_cli("{ws}/data/prose"), commands=("cli",)),
    Case("select --out inside --pool", "outputs", argv=_select_cli("{ws}/data/prose/sel"), commands=("cli",)),
    Case("select --out a parent of --pool", "outputs", argv=_select_cli("{ws}/data"), commands=("cli",)),
    Case("select --out /etc/x", "outputs", argv=_select_cli("/etc/proxyscale-x"), commands=("cli",)),
    Case("select --out an earlier selection, no --overwrite", "outputs", _earlier_output(False),
         argv=_select_cli("{store}/sel"), commands=("cli",)),
    Case("select --overwrite of an output holding a foreign file", "outputs", _earlier_output(True),
         argv=_select_cli("{store}/sel", "--overwrite"), commands=("cli",)),
    Case("select: .txt pool with a NUL byte", "outputs", _nul_pool,
         argv=_select_cli("{store}/sel", pool="{ws}/data/nul"), commands=("cli",)),
    Case("source: .txt with a NUL byte", "outputs", _point_doc(_write("nul.txt", b"some text\0more text\n"))),
    Case("pool.n_windows: 1e9", "outputs", _selection_sized("pool.n_windows", 1_000_000_000)),
    Case("selection n_target: 1000 (test set of 12)", "outputs", _selection_sized("selections.sel.n_target", 1000)),
    # -- the store: given as a file, hostile step records (a damaged step is re-run: exit 0) ------
    Case("run --store a file", "store", argv=("run", "{spec}", "--store", "{ws}/data/doc.jsonl"), commands=("cli",)),
    Case("demo --store a file", "store", argv=("demo", "--store", "{ws}/data/doc.jsonl"), commands=("cli",)),
    Case("verify --store a file", "store", argv=("verify", "--store", "{ws}/data/doc.jsonl"), commands=("cli",)),
    Case("report --store a file", "store", argv=("report", "{spec}", "--store", "{ws}/data/doc.jsonl"),
         commands=("cli",)),
    Case("plan --store a file", "store", argv=("plan", "{spec}", "--store", "{ws}/data/doc.jsonl"), commands=("cli",)),
    Case("attribute --store a file", "store", argv=("attribute", "--store", "{ws}/data/doc.jsonl"), commands=("cli",)),
    Case("store record names /dev/zero", "store", bad=False, commands=("run",),
         mutate=_finished_then(_record_files(lambda f: {**f, "/dev/zero": {"bytes": 0, "sha256": "0" * 64}}))),
    Case("store record names ../../../outside.txt", "store", bad=False, commands=("run",),
         mutate=_finished_then(_record_files(lambda f: {**f, "../../../../x": {"bytes": 1, "sha256": "0" * 64}}))),
    Case("store record files as a list", "store", bad=False, commands=("run",),
         mutate=_finished_then(_record_files(lambda f: list(f.items())))),
    Case("store record without sha256", "store", bad=False, commands=("run",),
         mutate=_finished_then(_record_files(lambda f: {k: {"bytes": v["bytes"]} for k, v in f.items()}))),
    Case("store record not an object", "store", bad=False, commands=("run",),
         mutate=_finished_then(lambda step: (step / "_step.json").write_text("[]"))),
    # -- export: a trained model of a store as a Hugging Face directory -------------------------
    Case("export: no such model", "export", _two_trained, commands=("cli",),
         argv=("export", "L2d64", "--store", "{ws}/data/runs", "--out", "{ws}/hf")),
    Case("export: ambiguous prefix", "export", _two_trained, commands=("cli",),
         argv=("export", "L1d", "--store", "{ws}/data/runs", "--out", "{ws}/hf")),
    Case("export: --store without a store", "export", commands=("cli",),
         argv=("export", "L1d4", "--store", "{ws}/nothing", "--out", "{ws}/hf")),
    # -- select as a daily tool: --n as a count or fraction, --write, --set keys, hub flags ---------
    Case("select --n 1.5 (a fraction above 1)", "cli", argv=_select_cli("{store}/sel", "--n", "1.5"),
         commands=("cli",)),
    Case("select --n 0.0", "cli", argv=_select_cli("{store}/sel", "--n", "0.0"), commands=("cli",)),
    Case("select --n many", "cli", argv=_select_cli("{store}/sel", "--n", "many"), commands=("cli",)),
    Case("select --write csv", "cli", argv=_select_cli("{store}/sel", "--write", "csv"), commands=("cli",)),
    Case("select --write jsonl, --out inside --pool", "outputs",
         argv=_select_cli("{ws}/data/prose/sel", "--write", "jsonl"), commands=("cli",)),
    Case("select --set unknown key", "cli", argv=_select_cli("{store}/sel", "--set", "top_kk=true"), commands=("cli",)),
    Case("select --method dsir --set ngrams=two", "cli",
         argv=_select_cli("{store}/sel", "--method", "dsir", "--set", "ngrams=two"), commands=("cli",)),
    Case("select --text-field of no column", "cli", argv=_select_cli("{store}/sel", "--text-field", "body",
                                                                      pool="{ws}/data/doc.jsonl"), commands=("cli",)),
    Case("select --max-docs 0", "cli", argv=_select_cli("{store}/sel", "--max-docs", "0"), commands=("cli",)),
    Case("select --split without --hub", "cli", argv=_select_cli("{store}/sel", "--split", "validation"),
         commands=("cli",)),
    Case("select --hub, a dataset not on this machine (offline)", "cli",
         argv=_select_cli("{store}/sel", "--hub", pool="no-such-user/no-such-dataset"), commands=("cli",)),
    # -- suites: models proxyscale did not train (results tables, checkpoints, lm-eval logs) ----
    Case("suite: valid results-table suite (control)", "suite", _suite(), bad=False),
    Case("suite: no reference", "suite", _suite(_suite_set("reference", False))),
    Case("suite: one distribution only", "suite",
         _suite(lambda suite, ws: [m.update(distribution="web", seed=i) for i, m in enumerate(suite["models"])])),
    Case("suite: two models with the same distribution, scale and seed", "suite",
         _suite(_suite_set("distribution", "web", index=2))),
    Case("suite: NaN loss in a results table", "suite", _suite(loss=float("nan"))),
    Case("suite: negative loss in a results table", "suite", _suite(loss=-1.0)),
    Case("suite: a metric the models lack (bpb)", "suite",
         _suite(lambda suite, ws: suite["analysis"].update(metric="bpb"))),
    Case("suite: checkpoint without weights", "suite",
         _suite(_checkpoint(lambda d: (d / "tokenizer.json").write_text("{}")))),
    Case("suite: checkpoint without a tokenizer", "suite",
         _suite(_checkpoint(lambda d: (d / "model.safetensors").write_bytes(b"x")))),
    Case("suite: weights symlinked outside the checkpoint", "suite",
         _suite(_checkpoint(lambda d: ((d / "tokenizer.json").write_text("{}"),
                                       (d / "model.safetensors").symlink_to(d.parent / "doc.jsonl"))))),
    Case("suite: lm-eval logs of different task versions", "suite", _suite(_lmeval_runs({"version": 2.0}))),
    Case("suite: lm-eval logs of another task", "suite", _suite(_lmeval_runs({"task": "other"}))),
    # -- selection statistics: a qa target over sources without titles -----------------------------
    Case("qa test set over sources without titles", "spec", _set("test_sets.mixed.kind", "qa")),
    Case("selection qa target over sources without titles", "spec", _selection_target("qa")),
    # analysis metric (loss, bpb, correct_prob, accuracy)
    Case("analysis.metric: bpb (not recorded by this study)", "types", _set("analysis.metric", "bpb")),
    Case("analysis.metric: correct_prob (not recorded by this study)", "types",
         _set("analysis.metric", "correct_prob")),
    Case("analysis.metric: acc (not a metric)", "types", _set("analysis.metric", "acc")),
    Case("analysis.metric: accuracy without a choice test set", "types", _set("analysis.metric", "accuracy")),
    Case("analysis.metric: accuracy with loss: token_mean", "types",
         lambda s, ws: _set("analysis.loss", "token_mean")(_set("analysis.metric", "accuracy")(s, ws), ws)),
    # sharded pools (select --workers/--backend)
    Case("select shards of mixed formats", "outputs", _shards("mixed"), commands=("cli",),
         argv=_select_cli("{ws}/sel", "--workers", "1", pool="{ws}/data/shards")),
    Case("select a shard without the text field", "outputs", _shards("field"), commands=("cli",),
         argv=_select_cli("{ws}/sel", "--workers", "1", pool="{ws}/data/shards")),
    Case("select a corrupt .zst shard", "outputs", _shards("zst"), commands=("cli",),
         argv=_select_cli("{ws}/sel", "--workers", "1", pool="{ws}/data/shards")),
    Case("select an empty glob", "outputs", commands=("cli",),
         argv=_select_cli("{ws}/sel", "--workers", "1", pool="{ws}/data/none-*.jsonl")),
    # -- micro-batches and data-parallel ranks (SPEC §10) ------------------------------------------
    Case("train.micro_batch_size 3 (does not divide batch_size 4)", "types", _set("train.micro_batch_size", 3)),
    Case("train.micro_batch_size -1", "types", _set("train.micro_batch_size", -1)),
    Case("rung ranks 0", "types", _rung_ranks(0)),
    Case("rung ranks 1.5", "types", _rung_ranks(1.5)),
    Case("rung ranks 3 (does not divide batch_size 4)", "types", _rung_ranks(3)),
    Case("rung ranks 2 with micro_batch_size 4 (2 rows per rank)", "types",
         lambda s, ws: _set("train.micro_batch_size", 4)(_rung_ranks(2)(s, ws), ws)),
    # -- GPU planning: the gpu block, micro-batches, ranks, steps that do not fit the GPU -------------
    Case("gpu.name unknown (H100)", "spec", _set("gpu", {"name": "H100"})),
    Case("gpu custom without memory_gb", "spec", _set("gpu", {"name": "mine", "peak_tflops": 100})),
    Case("ladder.ranks 3 (does not divide batch 4)", "spec", _set("ladder.ranks", 3)),
    Case("ladder.ranks: many (not a number or auto)", "types", _set("ladder.ranks", "many")),
    Case("train.micro_batch_size: biggest (not a number or auto)", "types", _set("train.micro_batch_size", "biggest")),
    Case("a rung that cannot fit the GPU (100 kB)", "spec",
         _set("gpu", {"name": "toy", "memory_gb": 0.0001, "peak_tflops": 1})),
    Case("plan --gpus 0", "cli", commands=("cli",), argv=("plan", "{spec}", "--gpus", "0")),
    # DsDm on sharded pools (select --method dsdm/bot-dsdm --workers)
    Case("select dsdm shards with an empty document", "outputs", _dsdm_shards("document"), commands=("cli",),
         argv=_dsdm_cli("dsdm", "2")),
    Case("select bot-dsdm shards toward an empty target example", "outputs", _dsdm_shards("target"),
         commands=("cli",), argv=_dsdm_cli("bot-dsdm", "1")),
    Case("select dsdm shards with --max-docs", "outputs", _dsdm_shards("none"), commands=("cli",),
         argv=(*_dsdm_cli("dsdm", "1"), "--max-docs", "1")),
    # -- suites: the document-start rule, and one results table shared by several models ----
    Case("suite: evaluation.document_start: bos (not lm_eval or prefix)", "types",
         _suite(lambda suite, ws: suite.update(evaluation={"document_start": "bos"}))),
    Case("suite: a results table shared by models without a model column", "suite",
         _suite(_shared_table_without_models)),
    Case("suite: a model the shared results table has no rows of", "suite",
         _suite(_suite_set("name", "web-XL", index=1))),
)


@dataclass
class Outcome:
    case: str
    command: str
    verdict: str
    returncode: Optional[int]
    stderr: str


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        for f in filenames:
            p = here / f
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _steps_ran(store: Path) -> bool:
    steps = store / "steps"
    return steps.is_dir() and any(p.name != ".partial" or any(p.iterdir())
                                  for kind in steps.iterdir() if kind.is_dir() for p in kind.iterdir())


def classify(returncode: Optional[int], stderr: str, *, bad: bool, steps_ran: bool, escaped: bool,
             stdout: str = "", at_run: bool = False) -> str:
    """The verdict of one command (see the module docstring)."""
    if returncode is None:
        return "hang"
    if escaped:
        return "escaped"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if "Traceback" in stderr or len(lines) > 1:
        return "traceback"
    if returncode == 0 and bad and not lines and REFUSES in stdout:
        return "clean"  # `plan` is a dry run: it prints why `run` would refuse and exits 0
    if returncode == 0:
        return "accepted" if bad else "ok"
    if not bad:
        return "failed"
    if steps_ran and not at_run:
        return "late"
    return "clean" if len(lines) == 1 and lines[0].startswith("error: ") else "traceback"


def _argv(case: Case, command: str, spec: Path, store: Path, ws: Path) -> list[str]:
    fill = {"spec": str(spec), "store": str(store), "ws": str(ws)}
    if case.argv is not None:
        return [a.format(**fill) for a in case.argv]
    if command == "plan":
        return ["plan", str(spec)]
    return ["run", str(spec), "--store", str(store), "--no-progress", *[a.format(**fill) for a in case.args]]


def try_case(case: Case, command: str, ws: Path, timeout: float = 60.0) -> Outcome:
    """Run one case's command in workspace ``ws`` (made by :func:`make_workspace`) and classify it."""
    spec_path, store = ws / "spec.yaml", ws / "store"
    data = tiny_spec(ws / "data")
    mutated = case.mutate(data, ws) if case.mutate else data
    text = mutated if isinstance(mutated, str) else yaml.safe_dump(mutated, sort_keys=False)
    spec_path.write_text(text, encoding="utf-8")
    before = _snapshot(ws, store)
    env = {**os.environ, "PYTHONPATH": str(SRC), "HOME": str(ws / "home"), "TMPDIR": str(ws / "tmp"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("XDG_CACHE_HOME", None)
    cmd = [sys.executable, "-m", "proxyscale.cli", *_argv(case, command, spec_path, store, ws)]
    try:
        r = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=timeout,
                           start_new_session=True)
        rc, err, out = r.returncode, r.stderr, r.stdout
    except subprocess.TimeoutExpired as e:
        rc, err, out = None, _text_of(e.stderr), _text_of(e.stdout)
    after = _snapshot(ws, store)
    escaped = any(before.get(k) != v for k, v in after.items() if k != "spec.yaml" and not k.startswith(CACHES))
    verdict = classify(rc, err, bad=case.bad, steps_ran=_steps_ran(store), escaped=escaped, stdout=out,
                       at_run=case.at_run)
    said = err.strip() or (out.strip().splitlines()[-1] if command == "plan" and REFUSES in out else "")
    return Outcome(case.name, command, verdict, rc, said.splitlines()[-1] if said else "")


def _text_of(stream: Any) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


def run_all(timeout: float = 60.0, cases: tuple[Case, ...] = CASES) -> list[Outcome]:
    out = []
    for case in cases:
        for command in case.commands:
            with tempfile.TemporaryDirectory(prefix="bad-input-") as d:
                ws = make_workspace(Path(d))
                out.append(try_case(case, command, ws, timeout))
                o = out[-1]
                print(f"{o.verdict:>9}  {command:<4}  {case.name}  | {o.stderr[:150]}", flush=True)
    return out


def table(outcomes: list[Outcome]) -> str:
    """A markdown table: per group, how many commands gave each verdict (``ok`` and ``failed``
    for the inputs that should work: the control, and damaged store records a run repairs)."""
    verdicts = ("clean", "traceback", "accepted", "late", "hang", "escaped", "ok", "failed")
    groups: dict[str, dict[str, int]] = {}
    for o in outcomes:
        g = next(c.group for c in CASES if c.name == o.case)
        row = groups.setdefault(g, dict.fromkeys(verdicts, 0))
        row[o.verdict] += 1
    head = "| inputs | tried | " + " | ".join(verdicts) + " |\n|---|---|" + "---|" * len(verdicts) + "\n"
    rows = [f"| {g} | {sum(r.values())} | " + " | ".join(str(r[v]) for v in verdicts) + " |" for g, r in groups.items()]
    total = {v: sum(r[v] for r in groups.values()) for v in verdicts}
    rows.append(f"| **all** | {sum(total.values())} | " + " | ".join(str(total[v]) for v in verdicts) + " |")
    return head + "\n".join(rows)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    a = ap.parse_args()
    results = run_all(a.timeout, tuple(c for c in CASES if a.only in c.name))
    print()
    print(table(results))
    control = [o for o in results if o.case.startswith("valid")]
    print("control:", ", ".join(f"{o.command}={o.verdict}" for o in control))
