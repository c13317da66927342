"""``proxyscale suite init DIR``: a suite spec skeleton from what lies under DIR.

Hugging Face checkpoint directories (``config.json`` beside ``*.safetensors``) become checkpoint
models, with their parameter count read from the safetensors headers; directories holding
lm-eval ``results_*.json`` become samples models, and their tasks test sets. Every label only
the user knows (distribution, scale, training tokens, which models are the reference, the text
the checkpoints are evaluated on) is written as ``FILL-ME``; the spec is refused until none is
left. The file is written through the output policy (:mod:`proxyscale.store.output`).
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

from ...errors import DataError
from .spec import FILL_ME

HEADER = f"""# A proxyscale suite written by `proxyscale suite init`. Replace every {FILL_ME}:
#   distribution  the training data recipe of the model (models of one recipe share it)
#   scale         a size label (models of one size share it); mark the largest scale `reference: true`
#   train_tokens  tokens the model was trained on (flops defaults to 6 * params * train_tokens)
#   seed          tell the seeds of one (distribution, scale) apart
# Checkpoints are evaluated on `test_sets` built from `sources` (held-out text, as in a scaling
# study); lm-eval runs bring their own test sets (one per task). See README "Suites".
"""


def _safe(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "model"
    return name[:200]


def safetensors_params(files: list[Path]) -> int | None:
    """Elements of every tensor in the safetensors files (their headers only), or None if unreadable."""
    total = 0
    try:
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            for k, v in header.items():
                if k != "__metadata__":
                    size = 1
                    for d in v["shape"]:
                        size *= int(d)
                    total += size
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return total


def scan(root: Path) -> tuple[list[Path], dict[Path, list[Path]]]:
    """(checkpoint directories, lm-eval directories → their results files) under ``root``,
    sorted; symlinked directories are not followed."""
    checkpoints, lmeval = [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        if "config.json" in filenames and any(f.endswith(".safetensors") for f in filenames):
            checkpoints.append(here)
        results = sorted(here / f for f in filenames if f.startswith("results_") and f.endswith(".json"))
        if results:
            lmeval[here] = results
    return checkpoints, lmeval


def _tasks(results: list[Path]) -> list[str]:
    out: set[str] = set()
    for r in results:
        try:
            configs = json.loads(r.read_text(encoding="utf-8")).get("configs") or {}
        except (OSError, ValueError, AttributeError):
            continue
        out |= set(configs) if isinstance(configs, dict) else set()
    return sorted(out)


def _model(name: str, evidence: dict[str, Any], params: Any) -> dict[str, Any]:
    return {"name": name, "distribution": FILL_ME, "scale": FILL_ME, "seed": 0, "params": params,
            "train_tokens": FILL_ME, "reference": False, **evidence}


def skeleton(root: str | Path) -> dict[str, Any]:
    """The spec skeleton (plain data) for the checkpoints and lm-eval runs under ``root``."""
    base = Path(root).resolve()
    if not base.is_dir():
        raise DataError(f"{root}: not a directory; give the folder holding the checkpoints or lm-eval outputs")
    checkpoints, lmeval = scan(base)
    if not checkpoints and not lmeval:
        raise DataError(f"{root}: no Hugging Face checkpoint (config.json + *.safetensors) and no lm-eval "
                        "results_*.json under it; give the folder that holds them")
    models, names = [], set()

    def unique(path: Path) -> str:
        name = _safe(str(path.relative_to(base)) if path != base else base.name)
        while name in names:
            name += "-2"
        names.add(name)
        return name

    for d in checkpoints:
        params = safetensors_params(sorted(d.glob("*.safetensors")))
        models.append(_model(unique(d), {"checkpoint": str(d)}, params if params else FILL_ME))
    tasks: set[str] = set()
    for d, results in sorted(lmeval.items()):
        models.append(_model(unique(d), {"samples": str(d / "results_*.json")}, FILL_ME))
        tasks |= set(_tasks(results))
    spec: dict[str, Any] = {"kind": "suite", "name": _safe(base.name), "models": models}
    test_sets: dict[str, Any] = {_safe(t): {"task": t} for t in sorted(tasks)}
    if checkpoints:
        spec["sources"] = {"text": {"kind": "local", "path": FILL_ME}}
        test_sets["heldout"] = {"kind": "lm", "sources": ["text"], "n_examples": 200}
    spec["test_sets"] = test_sets
    spec["analysis"] = {"metric": "loss" if checkpoints and not lmeval else "bpb"}
    return spec


def write_skeleton(root: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the skeleton of ``root`` as YAML to ``out`` (output policy: ``root`` is an input)."""
    import yaml

    from ...store.output import output_file

    spec = skeleton(root)
    with output_file(out, inputs=[("DIR", root)], overwrite=overwrite) as tmp:
        tmp.write_text(HEADER + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return Path(out)
