"""The data fragment: corpus → tokenizer → token shards (per source) → test sets.

Any study that trains language models composes it (:func:`add_data`). Training shards hold only
the documents *not* held out; test sets are built only from held-out documents (one hash decides
both), so no test example is ever trained on. The tokenizer is part of training: it is fitted on
the training sources' text only (or on ``tokenizer.sources``), so a never-trained-on test domain
does not shape the vocabulary, and a test-only source enters only the steps of its test sets.
Every test set records how many examples were asked for and how many were built.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional

from ...config import from_dict, suggest, to_dict
from ...errors import ConfigError
from ...run.plan import Plan, Step, check_name
from ...run.step import StepContext, step_kind
from ...store import read_json, write_json

# -- spec pieces -------------------------------------------------------------------------------
MAX_VOCAB = 1_000_000
SAMPLE_BYTES_PER_ENTRY = 8  # a BPE learns far fewer merges than this from less text
MAX_TEST_EXAMPLES = 100_000  # per test set; each is evaluated by every trained model

@dataclass(frozen=True)
class TokenizerSpec:
    """The byte-level BPE. ``sources``: the sources whose training text fits it (default: every
    source a training distribution reads; never a test-only source unless named here)."""

    vocab_size: int = 512
    sample_bytes: int = 4_000_000
    sources: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.vocab_size < 259:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size}: a byte-level BPE needs at least 259 "
                              "entries (256 bytes + specials); use e.g. 512 for the demo, 50,368 for the paper")
        if self.sources is not None and not self.sources:
            raise ConfigError("tokenizer.sources is empty: name the sources to fit it on, or leave it out "
                              "to use the training distributions' sources")
        if self.vocab_size > MAX_VOCAB:
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size:,} is above the limit of {MAX_VOCAB:,} "
                              "entries; use e.g. 512 for the demo, 50,368 for the paper")
        if self.sample_bytes < SAMPLE_BYTES_PER_ENTRY * self.vocab_size:
            raise ConfigError(f"tokenizer.sample_bytes={self.sample_bytes:,} is too little text to learn "
                              f"vocab_size={self.vocab_size:,} entries: give at least {SAMPLE_BYTES_PER_ENTRY} bytes "
                              f"per entry (sample_bytes ≥ {SAMPLE_BYTES_PER_ENTRY * self.vocab_size:,}) or a "
                              "smaller vocabulary")


@dataclass(frozen=True)
class CorpusSpec:
    """The embedded corpus (:func:`proxyscale.data.corpus.build_corpus` settings)."""

    max_bytes_per_domain: int = 4_000_000
    use_apt: bool = True
    domains: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.max_bytes_per_domain <= 0:
            raise ConfigError(f"corpus.max_bytes_per_domain must be positive, got {self.max_bytes_per_domain}")
        from ...data.corpus import ALL_DOMAINS

        for d in self.domains or ():
            if d not in ALL_DOMAINS:
                raise ConfigError(f"corpus.domains: unknown domain '{d}'{suggest(d, ALL_DOMAINS)}; "
                                  f"known: {', '.join(ALL_DOMAINS)}")


@dataclass(frozen=True)
class TestSetSpec:
    """A test set: built from held-out text of ``sources`` (embedded/local) or loaded from the hub."""

    kind: Literal["lm", "cloze", "qa", "choice"]
    sources: tuple[str, ...] = ()
    hub: Optional[str] = None  # one of the paper's test sets by name: c4, pile, squad, lambada, hellaswag, trivia_qa
    n_examples: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.n_examples <= MAX_TEST_EXAMPLES:
            raise ConfigError(f"test set n_examples={self.n_examples:,}: give a positive number up to "
                              f"{MAX_TEST_EXAMPLES:,} (each example is evaluated by every trained model)")
        if not self.sources and self.hub is None:
            raise ConfigError("a test set needs either 'sources' (held-out text) or 'hub' (a paper test set)")


def source_spec(name: str, raw: Mapping[str, Any]):
    """The typed :class:`~proxyscale.data.sources.SourceSpec` of a spec's source (kind defaults to
    ``embedded``, label to the source's name)."""
    from ...data.sources import SourceSpec

    spec = from_dict(SourceSpec, {"kind": "embedded", **raw}, f"sources.{name}")
    return spec if spec.label else from_dict(SourceSpec, {"kind": "embedded", **raw, "label": name}, name)


def check_sources(sources: Mapping[str, Mapping[str, Any]], test_sets: Mapping[str, TestSetSpec],
                  tokenizer: Optional[TokenizerSpec] = None) -> None:
    """Every source parses, and every test set (and ``tokenizer.sources``) names known sources (at
    spec load, not in a worker)."""
    if not sources:
        raise ConfigError("sources: define at least one source")
    for name, raw in sources.items():
        check_name(name, "sources: the source name")
        source_spec(name, raw)
    for tname, ts in test_sets.items():
        check_name(tname, "test_sets: the test set name")
        for s in ts.sources:
            if s not in sources:
                raise ConfigError(f"test_sets.{tname}.sources: unknown source '{s}'{suggest(s, sources)}")
    for s in (tokenizer.sources or ()) if tokenizer is not None else ():
        if s not in sources:
            raise ConfigError(f"tokenizer.sources: unknown source '{s}'{suggest(s, sources)}")


# -- step configs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Split:
    seed: int
    heldout_fraction: float


@dataclass(frozen=True)
class TokenizerStep(_Split):
    vocab_size: int = 512
    sample_bytes: int = 4_000_000
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        TokenizerSpec(self.vocab_size, self.sample_bytes)
        for n, raw in self.sources.items():
            source_spec(n, raw)


@dataclass(frozen=True)
class ShardStep(_Split):
    source: str = ""
    spec: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        source_spec(self.source, self.spec)


@dataclass(frozen=True)
class TestSetStep(_Split):
    name: str = ""
    kind: Literal["lm", "cloze", "qa", "choice"] = "lm"
    sources: tuple[str, ...] = ()
    hub: Optional[str] = None
    n_examples: int = 200
    context: int = 128
    source_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    untrained: tuple[str, ...] = ()  # sources no training step reads: every document may be a test example

    def __post_init__(self) -> None:
        for n, raw in self.source_specs.items():
            source_spec(n, raw)


# -- the fragment ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataKeys:
    """The keys of a data fragment's steps."""

    tokenizer: str
    shards: dict[str, str]
    tests: dict[str, str]
    corpus: Optional[str] = None

    def shard_inputs(self, mixture: Mapping[str, float]) -> dict[str, str]:
        """Input roles ``shard:<source>`` of a mixture's sources with positive weight."""
        return {f"shard:{s}": self.shards[s] for s, w in mixture.items() if w > 0}

    def test_inputs(self) -> dict[str, str]:
        return {f"test:{t}": k for t, k in self.tests.items()}


def add_data(plan: Plan, *, sources: Mapping[str, dict[str, Any]], used: list[str],
             test_sets: Mapping[str, TestSetSpec], tokenizer: TokenizerSpec, corpus: CorpusSpec, seed: int,
             heldout_fraction: float, test_context: int) -> DataKeys:
    """Add the data steps: the tokenizer over the ``used`` sources (those training reads) or
    ``tokenizer.sources``, one shard per ``used`` source, one test set per entry of ``test_sets``,
    and the corpus for the steps that read an embedded source. Each step's config and inputs
    name only the sources it reads, so changing a test-only source re-runs only its test sets
    and what reads them."""
    common = {"seed": seed, "heldout_fraction": heldout_fraction}
    fit_on = sorted(tokenizer.sources or used)
    if not fit_on:
        raise ConfigError("tokenizer: no training source to fit it on; give a distribution a source with "
                          "positive weight, or name tokenizer.sources")

    corpus_key: list[str] = []

    def cin(names) -> dict[str, str]:
        if not any(sources[n].get("kind", "embedded") == "embedded" for n in names):
            return {}
        corpus_key[:] = [plan.add(Step("corpus", "embedded", _corpus_config(corpus), cost=5e9))]
        return {"corpus": corpus_key[0]}

    tok_cfg = {"vocab_size": tokenizer.vocab_size, "sample_bytes": tokenizer.sample_bytes, **common,
               "sources": {n: sources[n] for n in fit_on}}
    tok = plan.add(Step("tokenizer", f"bpe{tokenizer.vocab_size}", tok_cfg, cin(fit_on), cost=2e9))
    shards = {s: plan.add(Step("shard", s, {"source": s, "spec": sources[s], **common},
                               {"tokenizer": tok, **cin([s])}, cost=2e9)) for s in sorted(used)}
    tests, trained = {}, {*used, *fit_on}
    for tname, ts in sorted(test_sets.items()):
        cfg = {"name": tname, **to_dict(ts), "context": test_context, **common,
               "source_specs": {s: sources[s] for s in ts.sources},
               "untrained": sorted(s for s in ts.sources if s not in trained)}
        tests[tname] = plan.add(Step("testset", tname, cfg, {"tokenizer": tok, **cin(ts.sources)}, cost=1e9))
    return DataKeys(tok, shards, tests, corpus_key[0] if corpus_key else None)


def _corpus_config(corpus: CorpusSpec) -> dict[str, Any]:
    return {k: v for k, v in to_dict(corpus).items() if v is not None}


# -- step functions ----------------------------------------------------------------------------
def _holdout(cfg: dict[str, Any]):
    from ...data.split import HoldOut

    return HoldOut(fraction=cfg["heldout_fraction"], salt=f"proxyscale-{cfg['seed']}")


def _corpus_dir(ctx: StepContext) -> Path | None:
    return ctx.inputs["corpus"] / "corpus" if "corpus" in ctx.inputs else None


@step_kind("corpus", config=CorpusSpec)
def corpus_step(ctx: StepContext) -> None:
    """Build the embedded corpus from real offline text (Debian packages, else Python's own)."""
    from ...data.corpus import build_corpus

    work = ctx.out / "work"
    try:
        # a resumed step may find the corpus a killed attempt finished in its own partial directory
        build_corpus(ctx.out / "corpus", work_dir=work, overwrite=True, **ctx.config)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # downloaded packages are not a result


def _training_texts(ctx: StepContext, budget: int) -> Iterator[str]:
    """Up to ``budget`` bytes of training (not held-out) text, split evenly across sources."""
    from ...data.sources import iter_documents
    from ...data.split import training_documents

    sources = ctx.config["sources"]
    per = budget // max(1, len(sources))
    for name, raw in sorted(sources.items()):
        spec, used = source_spec(name, raw), 0
        for d in training_documents(iter_documents(spec, _corpus_dir(ctx)), spec.key, _holdout(ctx.config)):
            yield d.text
            used += len(d.text.encode("utf-8"))
            if used >= per:
                break


@step_kind("tokenizer", config=TokenizerStep)
def tokenizer_step(ctx: StepContext) -> None:
    """Train the byte-level BPE on a balanced sample of its sources' training text (the training
    distributions' sources: a never-trained-on test domain must not shape the vocabulary)."""
    from ...data.tokenizer import train_tokenizer

    tok = train_tokenizer(_training_texts(ctx, ctx.config["sample_bytes"]), ctx.config["vocab_size"],
                          ctx.out / "tokenizer.json")
    write_json(ctx.out / "tokenizer_info.json", {"vocab_size": tok.vocab_size, "eos_id": tok.eos_id,
                                                 "sha256": tok.sha256, "sources": sorted(ctx.config["sources"])})


@step_kind("shard", config=ShardStep)
def shard_step(ctx: StepContext) -> None:
    """Tokenize one source's training documents into a memory-mapped token shard."""
    from ...data.shards import tokenize_to_shard
    from ...data.sources import iter_documents
    from ...data.split import training_documents
    from ...data.tokenizer import load_tokenizer

    spec = source_spec(ctx.config["source"], ctx.config["spec"])
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    docs = training_documents(iter_documents(spec, _corpus_dir(ctx)), spec.key, _holdout(ctx.config))
    tokenize_to_shard(docs, tok, ctx.out)


@step_kind("testset", version=3, config=TestSetStep)
def testset_step(ctx: StepContext) -> None:
    """Build a test set from held-out text of its sources (an even share each), or load a hub
    test set; record how many examples were asked for and how many were built."""
    from ...data.testset import write_test_set
    from ...data.tokenizer import load_tokenizer

    cfg = ctx.config
    tok = load_tokenizer(ctx.inputs["tokenizer"] / "tokenizer.json")
    if cfg.get("hub"):
        from ...data.hf import load_hf_test_set

        ts = load_hf_test_set(cfg["hub"], tok, cfg["context"], cfg["n_examples"], name=cfg["name"])
        per_source = {}
    else:
        ts, per_source = _held_out_test_set(ctx, tok)
    write_test_set(ts, ctx.out / "test.parquet")
    write_json(ctx.out / "testset.json", {"name": ts.name, "kind": ts.kind, "n_examples": len(ts),
                                          "requested": cfg["n_examples"], "built": len(ts), "sources": per_source})


def _held_out_test_set(ctx: StepContext, tok):
    """The test set of ``ctx``'s sources (shares as even as their text allows, :func:`allocate`)
    and, per source, how many examples it could give (up to ``n_examples``) and how many it gave."""
    from dataclasses import replace

    from ...data.tasks import allocate
    from ...data.testset import TestSet

    cfg = ctx.config
    parts = {s: _source_examples(ctx, s, tok) for s in cfg["sources"]}
    take = allocate(cfg["n_examples"], [len(p) for p in parts.values()])
    examples, counts = [], {}
    for (s, part), k in zip(parts.items(), take):
        examples += [replace(e, example_id=f"{s}/{e.example_id}") for e in part[:k]]
        counts[s] = {"available": len(part), "built": k}
    return TestSet(cfg["name"], cfg["kind"], tuple(examples)), counts


def _source_examples(ctx: StepContext, source: str, tok) -> list:
    """Up to ``n_examples`` examples of one source, in its seeded order: from its held-out
    documents, or from all of them when no training step reads the source (nothing to hold out).
    Any prefix is what building fewer would give."""
    from ...data.sources import iter_documents
    from ...data.tasks import build_test_set, held_out_test_set
    from ...seeding import np_rng

    cfg = ctx.config
    spec, rng = source_spec(source, cfg["source_specs"][source]), np_rng(cfg["seed"], "testset", cfg["name"], source)
    kind, name, args = cfg["kind"], cfg["name"], (tok, cfg["context"], cfg["n_examples"], rng)
    if source in cfg.get("untrained", ()):
        return list(build_test_set(kind, name, list(iter_documents(spec, _corpus_dir(ctx))), *args).examples)
    return list(held_out_test_set(kind, name, spec, _holdout(cfg), *args, _corpus_dir(ctx)).examples)


# -- requested vs built ------------------------------------------------------------------------
def test_set_counts(plan: Plan, store: Any) -> dict[str, dict[str, Any]]:
    """``testset.json`` of every finished test-set step of ``plan`` in ``store``, by test-set name."""
    out = {}
    for step in plan.of_kind("testset"):
        f = store.final_dir(step.key) / "testset.json"
        if store.is_done(step.key) and f.is_file():
            out[step.config["name"]] = read_json(f)
    return out


def shortfalls(counts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per test set that built fewer examples than were requested."""
    lines = []
    for name, c in sorted(counts.items()):
        built, asked = c.get("built", c.get("n_examples", 0)), c.get("requested")
        if asked is None or built >= asked:
            continue
        per = ", ".join(f"{s}: {v['built']}" for s, v in sorted(c.get("sources", {}).items()))
        lines.append(f"test set '{name}' built {built} of the {asked} examples requested"
                     + (f" (all its sources give: {per})" if per else "")
                     + "; add documents (max_docs, heldout_fraction) or ask for fewer")
    return lines


def warn_shortfalls(plan: Plan, store: Any) -> None:
    """One ``warning:`` line on stderr per test set of ``plan`` that built fewer examples than requested."""
    import sys

    for line in shortfalls(test_set_counts(plan, store)):
        print(f"warning: {line}", file=sys.stderr)
