"""TRAK attribution of your own PyTorch model and data (``proxyscale.api.attribute``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError


def attribute(model: Any, state_dicts: Sequence[Mapping[str, Any]], train_data: Any, target_data: Any,
              task: Any = "classification", *, out: str | Path | None = None, overwrite: bool = False,
              **settings: Any) -> Any:
    """TRAK attribution scores of your own PyTorch model and data: (n_train, n_targets) float32.

    Args:
        model: the architecture (``nn.Module``); its weights come from ``state_dicts``.
        state_dicts: one state dict per ensemble member (independent seeds and/or checkpoints
            from the last third of training); more members give better scores.
        train_data, target_data: tuples of arrays sharing the first axis — ``(x, y)`` for
            classification, ``(tokens (B, L), mask (B, L-1))`` for ``task="lm"`` — or
            non-shuffling DataLoaders. ``target_data`` may be a mapping name → target set: the
            training data is then featurised once and a mapping name → scores is returned
            (``store_dir=...`` in the settings also keeps the features on disk between calls).
        task: ``"classification"`` (log-odds margin), ``"lm"`` (mean per-token log-odds; this
            package's GPT gets its vmap-safe attention automatically) or an
            :class:`~proxyscale.attribute.outputs.OutputFunction`.
        out: also write the scores to this ``.npy`` path, under the output policy
            (:mod:`proxyscale.store.output`): atomically, with a sidecar marker, and replacing an
            earlier output only with ``overwrite``.
        **settings: TRAK settings — ``k`` (projection dimension), ``projector``, ``lambda_ratio``
            (ridge λ as a multiple of the mean squared feature norm; 1.0 is safe), ``use_q``,
            ``param_filter``, ``seed``, ``batch_size`` ... (see :class:`proxyscale.attribute.TRAK`).

    Higher scores mean the training example raises the target's output. Example::

        scores = proxyscale.api.attribute(MyNet(), [torch.load(p, weights_only=True) for p in ckpts],
                                          (x_train, y_train), (x_test[:100], y_test[:100]), k=1024)
    """
    import numpy as np

    from ..store.output import check_output, output_file
    from .trak import trak_scores

    if not state_dicts:
        raise ConfigError("attribute: pass at least one state dict (ideally several models or checkpoints)")
    if isinstance(target_data, Mapping):  # several target sets: featurise the training data once
        if out is not None:
            raise ConfigError("attribute: `out` takes one score matrix; with several target sets, write each yourself")
        return _attribute_many(model, state_dicts, train_data, target_data, task, settings)
    if out is not None:
        check_output(out, overwrite=overwrite, single_file=True)  # before the work, not after
    scores = np.asarray(trak_scores(model, list(state_dicts), train_data, target_data, task, **settings),
                        dtype=np.float32)
    if out is not None:
        with output_file(out, overwrite=overwrite, need_bytes=scores.nbytes + 128) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, scores, allow_pickle=False)
    return scores


def _attribute_many(model: Any, state_dicts: Sequence[Mapping[str, Any]], train_data: Any,
                    targets: Mapping[str, Any], task: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Scores for each named target set, from one featurisation of the training data."""
    import numpy as np

    from .trak import TRAK

    trak = TRAK(model, task, **settings)
    for i, state in enumerate(state_dicts):
        trak.featurize(state, train_data, model_id=i)
    return {name: np.asarray(trak.score(t), dtype=np.float32) for name, t in targets.items()}
