"""Command line: parse → config → library call. No logic lives here."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import typer.core

from .errors import Interrupted, ProxyscaleError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Small-to-large generalization of training-data effects: proxy ladders, "
                       "per-example correlation, attribution and data selection.")
corpus_app = typer.Typer(no_args_is_help=True, help="The embedded corpus of real offline text.")
app.add_typer(corpus_app, name="corpus")
suite_app = typer.Typer(no_args_is_help=True, help="Suites: analyse models proxyscale did not train.")
app.add_typer(suite_app, name="suite")

STORE = typer.Option(Path("runs"), "--store", help="Run store directory (shared by studies; content-hashed).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an earlier proxyscale output at --out (only if it "
                                                       "holds nothing but the files proxyscale wrote there).")
WORKERS = typer.Option(0, "--workers", "-j", help="Parallel workers (0 = the spec's setting, else one per core).")


@app.command()
def run(spec: Path = typer.Argument(..., help="YAML study spec"), store: Path = STORE, workers: int = WORKERS,
        backend: Optional[str] = typer.Option(None, help="local | ray | slurm (default: the spec's)"),
        progress: bool = typer.Option(True, help="Show a progress bar with ETA."),
        force: bool = typer.Option(False, "--force", help="Run even when the resource estimate exceeds this "
                                                          "machine (memory, or 24 h of CPU); see `proxyscale plan`.")
        ) -> None:
    """Run a study (resumable: finished steps are skipped), then write its report.

    Sources are checked and the plan's memory and compute are estimated before any step runs."""
    from .api import run_study

    out = run_study(spec, store, workers=workers, backend=backend, progress=progress, force=force)
    typer.echo(f"report: {out}")


@app.command()
def demo(store: Path = STORE, workers: int = WORKERS,
         progress: bool = typer.Option(True, help="Show a progress bar with ETA.")) -> None:
    """Build the embedded corpus and run the three demo studies; write one report.

    configs/demo.yaml (small-to-large), configs/attribution-demo.yaml and
    configs/selection-demo.yaml."""
    from .api import run_demo

    out = run_demo(store, workers=workers, progress=progress)
    typer.echo(f"report: {out}")


@app.command()
def plan(spec: Path = typer.Argument(..., help="YAML study spec"), store: Optional[Path] = typer.Option(
        None, "--store", help="Also show each step's state in this store."),
        gpus: Optional[int] = typer.Option(None, "--gpus", help="Also pack the study on this many GPUs: its "
                                                                "wall-clock and critical path.")) -> None:
    """Dry run: every step with its parameters, tokens, FLOPs, estimated GPU-hours, each rung's GPUs,
    micro-batch and memory per GPU, the resource estimate (memory, CPU time) that `run` checks
    and what it would submit."""
    from .api import plan_text

    typer.echo(plan_text(spec, store, gpus))


@app.command()
def status(spec: Path = typer.Argument(..., help="YAML study spec"), store: Path = STORE) -> None:
    """Done / running / failed / pending steps of a study."""
    from .api import status_text

    text, failed = status_text(spec, store)
    typer.echo(text)
    if failed:
        raise typer.Exit(1)


@app.command()
def report(spec: Path = typer.Argument(..., help="YAML study spec"), store: Path = STORE) -> None:
    """(Re)write a finished study's report from the store."""
    from .api import write_study_report

    typer.echo(f"report: {write_study_report(spec, store)}")


@app.command()
def verify(spec: Optional[Path] = typer.Argument(None, help="YAML study spec (omit: every step in the store)"),
           store: Path = STORE) -> None:
    """Check finished steps' files against the sha256 sums recorded when they finished."""
    from .api import verify_store

    text, bad = verify_store(spec, store)
    typer.echo(text)
    if bad:
        raise typer.Exit(1)


@app.command()
def attribute(spec: Optional[Path] = typer.Argument(None, help="Attribution spec (YAML with kind: attribution); "
                                                             "omit to use the options below"),
              out: Path = typer.Option(Path("scores.npy"), "--out",
                                       help="Where to write the scores (n_train, n_targets)."),
              width: Optional[float] = typer.Option(None, help="Width multiplier (default: the reference)."),
              store: Path = STORE, workers: int = WORKERS,
              data: str = typer.Option("digits", help="digits | cifar10 (no spec)."),
              root: Optional[str] = typer.Option(None, help="CIFAR-10 binary directory (no spec)."),
              family: str = typer.Option("mlp", help="mlp | resnet (no spec)."),
              n_train: int = typer.Option(1000, help="Training examples (no spec)."),
              n_targets: int = typer.Option(100, help="Target examples (no spec)."),
              models: int = typer.Option(5, help="Models in the TRAK ensemble (no spec)."),
              k: int = typer.Option(512, help="Projection dimension (no spec)."),
              progress: bool = typer.Option(True, help="Show a progress bar."),
              overwrite: bool = OVERWRITE) -> None:
    """TRAK scores of one width's model ensemble, written as a .npy (train × targets).

    --out gets a sidecar <out>.proxyscale-output.json recording its sha256, so that a later
    --overwrite can tell proxyscale's own file from anyone else's."""
    from .api import attribution_options_spec, attribution_scores

    s = spec if spec is not None else attribution_options_spec(
        data=data, root=root, family=family, n_train=n_train, n_targets=n_targets, models=models, k=k,
        width=width if width is not None else 1.0)
    path = attribution_scores(s, store, width=width, out=out, workers=workers, progress=progress, overwrite=overwrite)
    typer.echo(f"scores: {path}")


class _SelectCommand(typer.core.TyperCommand):
    """``select``'s help ends with every registered method and its settings, read off the registry
    only when the help is shown (importing the methods takes a second)."""

    @property
    def epilog(self) -> Optional[str]:
        from rich.markup import escape

        from .select import describe_methods

        return escape("Methods (--method NAME; --set KEY=VALUE per setting):\n\n" + describe_methods())

    @epilog.setter
    def epilog(self, value: Optional[str]) -> None:
        pass


def _list_methods(value: bool) -> None:
    if value:
        from .select import describe_methods

        typer.echo(describe_methods())
        raise typer.Exit(0)


@app.command(cls=_SelectCommand)
def select(method: str = typer.Option(..., "--method", help="A registered method: see --list-methods (or the end "
                                                            "of this help)."),
           pool: str = typer.Option(..., "--pool", help="Pool: a text directory or file, .jsonl or .parquet "
                                                       "(with --hub: a Hugging Face dataset)."),
           target: str = typer.Option(..., "--target", help="Target examples, in the same formats."),
           n: str = typer.Option(..., "--n", help="How many pool documents to choose: a count (300) or a fraction "
                                                  "of the pool in (0, 1] (0.2)."),
           out: Path = typer.Option(..., "--out", help="Output directory (chosen.txt, scores.parquet, manifest.json)."),
           write: Optional[str] = typer.Option(None, "--write", help="Also write the chosen documents (id, text, "
                                               "score, rank; pool order) as --out/selected.jsonl or .parquet: "
                                               "jsonl | parquet."),
           seed: int = typer.Option(0, "--seed"),
           hub: bool = typer.Option(False, "--hub", help="Read --pool/--target from the Hugging Face hub."),
           hub_name: Optional[str] = typer.Option(None, "--hub-name", help="The hub dataset's config (e.g. en for "
                                                                           "allenai/c4)."),
           split: str = typer.Option("train", "--split", help="The hub split to read (both --pool and --target)."),
           revision: Optional[str] = typer.Option(None, "--revision", help="A hub branch, tag or commit to read."),
           max_docs: Optional[int] = typer.Option(None, "--max-docs", help="Read only the pool's first N documents."),
           streaming: bool = typer.Option(True, help="Stream hub records (no full download first)."),
           text_field: str = typer.Option("text", help="Text column of JSONL/Parquet/hub records."),
           id_field: Optional[str] = typer.Option(None, help="Id column of the pool (default: row number)."),
           setting: list[str] = typer.Option([], "--set", help="A method setting, KEY=VALUE (repeatable), "
                                                                "e.g. --set top_k=true; see --list-methods"),
           progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars with ETA on "
                                                   "stderr (default: when stderr is a terminal)."),
           overwrite: bool = OVERWRITE,
           workers: Optional[int] = typer.Option(None, "--workers", help="Run per shard (each file of --pool) on "
                                                 "N local processes (0: one per core); resumable, same selection."),
           backend: Optional[str] = typer.Option(None, "--backend", help="local | ray: run per shard on a process "
                                                 "pool or as Ray tasks."),
           ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --backend ray: a cluster's "
                                                     "HOST:PORT (default: a private local Ray)."),
           list_methods: bool = typer.Option(False, "--list-methods", is_eager=True, callback=_list_methods,
                                             help="List every method with its settings, types and defaults; exit.")
           ) -> None:
    """Choose pool documents toward a target set (seeded, reproducible); write ids, scores, manifest.

    --out must be a new or empty directory, or (with --overwrite) an earlier selection; it may not
    be, lie inside or contain --pool or --target. Warnings (excluded documents, a length bias, DsDm
    proxies too small to help) are one line each on stderr, and recorded in manifest.json."""
    from .api import select as run_select

    path = run_select(method, pool, target, n, out, seed=seed, hub=hub, text_field=text_field, id_field=id_field,
                      settings=_settings(setting), overwrite=overwrite, write=write, hub_name=hub_name, split=split,
                      revision=revision, max_docs=max_docs, streaming=streaming, progress=progress,
                      workers=workers, backend=backend, ray_address=ray_address)
    typer.echo(f"selection: {path}")


@app.command()
def export(step_or_model: str = typer.Argument(..., help="A train step key (train/<name>-<hash>), or a unique "
                                                        "prefix of one, or its name."),
           store: Path = STORE,
           out: Path = typer.Option(..., "--out", help="Output directory (config.json, model.safetensors, "
                                                       "tokenizer files)."),
           overwrite: bool = OVERWRITE) -> None:
    """Write a trained model as a Hugging Face directory (GPT-2) with its tokenizer.

    `AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` load it;
    --out must be a new or empty directory, or (with --overwrite) an earlier export."""
    from .api import export_model

    typer.echo(f"model: {export_model(step_or_model, store, out, overwrite=overwrite)}")


def _settings(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs, each VALUE read as YAML (numbers, booleans, lists)."""
    import yaml

    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise ProxyscaleError(f"--set {p!r}: write KEY=VALUE, e.g. --set top_k=true")
        out[key.strip()] = yaml.safe_load(value)
    return out


@corpus_app.command("build")
def corpus_build(out: Path = typer.Option(Path("corpus"), "--out", help="Output directory."),
                 max_bytes: int = typer.Option(4_000_000, help="Cap on the text kept per domain."),
                 apt: bool = typer.Option(True, help="Use Debian packages (else the Python installation)."),
                 overwrite: bool = OVERWRITE) -> None:
    """Build the embedded corpus from real text available offline (Debian packages, Python docs)."""
    from .data.corpus import build_corpus

    manifest = build_corpus(out, max_bytes_per_domain=max_bytes, use_apt=apt, overwrite=overwrite)
    for name, d in sorted(manifest["domains"].items()):
        typer.echo(f"{name:>12} {d['bytes']:>11,} bytes {d['n_docs']:>7,} docs  {d.get('package', '')}")
    typer.echo(f"corpus: {out}")


@suite_app.command("init")
def suite_init(folder: Path = typer.Argument(..., help="Folder holding Hugging Face checkpoints and/or lm-eval "
                                                     "outputs (results_*.json with samples_*.jsonl)."),
               out: Path = typer.Option(Path("suite.yaml"), "--out", help="Where to write the spec skeleton."),
               overwrite: bool = OVERWRITE) -> None:
    """Write a suite spec listing the checkpoints and lm-eval runs under FOLDER; fill in every FILL-ME
    (distribution, scale, training tokens, the reference), then `proxyscale run` it."""
    from .api import suite_init as write_skeleton

    typer.echo(f"suite spec: {write_skeleton(folder, out, overwrite=overwrite)}")


def _stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM raise :class:`Interrupted` in the main thread, the first time
    only: the run then stops its workers (a few seconds at most) undisturbed by a second Ctrl-C.
    Not KeyboardInterrupt: typer would turn that into a silent exit code before we could say
    what finished."""
    def on_signal(signum: int, _frame: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)


def main() -> None:
    """Entry point: one clear line and a non-zero exit for every user error; Ctrl-C and SIGTERM
    stop the run and print one ``interrupted: ...`` line (exit 130 and 143)."""
    _stop_on_signals()
    try:
        rc = app(standalone_mode=False)  # a command's `typer.Exit(code)` comes back as its return value
        if rc == 130:  # typer's answer to a KeyboardInterrupt raised before our handler was in place
            typer.echo(Interrupted(signal.SIGINT).line(), err=True)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except ProxyscaleError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Interrupted as e:
        typer.echo(e.line(), err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo(Interrupted(signal.SIGINT).line(), err=True)
        sys.exit(130)
    except (typer.Exit, SystemExit) as e:  # typer's own exits keep their code
        code = getattr(e, "exit_code", getattr(e, "code", 0))
        sys.exit(code or 0)
    except Exception as e:  # usage errors: typer raises its own (vendored) click exceptions
        code = getattr(e, "exit_code", None)
        if code is None or not hasattr(e, "format_message"):
            raise
        if type(e).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            command = getattr(getattr(e, "ctx", None), "command_path", None) or "proxyscale"
            typer.echo(f"error: {e.format_message()} (see `{command} --help`)", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
