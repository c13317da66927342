"""Model output functions f(z; θ) that TRAK attributes, and their Q terms.

An output function turns a model, its parameters and a batch into one scalar per example.
TRAK differentiates it per example; the datamodel/LDS ground truth evaluates it on retrained
models, so both sides must use the same definition (this module).

- ``classification``: the log-odds margin ``logit_y − logsumexp_{c≠y} logit_c``; batch
  ``(x (B, ...), y (B,))``.
- ``lm``: the mean over prediction positions of the per-token log-odds
  ``log(p_j / (1 − p_j))`` of the true next token; batch ``(tokens (B, L), mask (B, L-1))``
  in the layout of :func:`proxyscale.data.testset.padded_batch` (``mask[b, t] = 1`` iff
  token ``t+1`` is predicted). The model maps tokens (B, L) to logits (B, L, V).

The per-token log-odds is computed as ``logit_y − logsumexp_{c≠y} logit_c`` — algebraically
``log p − log(1 − p)`` but without ever forming ``1 − p``, which underflows once the softmax
saturates. The Q term is ``1 − p`` of the true class (the mean over prediction tokens for
language models), the out-to-loss weight of the original TRAK.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from ..config import suggest
from ..errors import ConfigError, DataError

Params = Mapping[str, Tensor]


@runtime_checkable
class OutputFunction(Protocol):
    """What TRAK needs from a model output function.

    ``outputs`` returns f for every example of a batch (B,); ``q_weights`` returns the
    out-to-loss weight Q (B,) (no gradient); ``check_batch`` raises :class:`DataError` for
    batches the function cannot handle (called once per batch, outside ``vmap``).
    """

    name: str

    def outputs(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> Tensor: ...

    def q_weights(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> Tensor: ...

    def check_batch(self, batch: Sequence[Tensor]) -> None: ...


def example_output(fn: OutputFunction, model: nn.Module, params: Params, example: Sequence[Tensor]) -> Tensor:
    """f for one example given without its batch dimension (the form ``vmap`` maps over)."""
    batch = [t.unsqueeze(0) for t in example]
    return fn.outputs(model, params, batch)[0]


def _call(model: nn.Module, params: Params, x: Tensor, kwargs: Mapping[str, Any]) -> Tensor:
    return torch.func.functional_call(model, dict(params), (x,), dict(kwargs))


def log_odds(logits: Tensor, target: Tensor) -> Tensor:
    """``logit_y − logsumexp_{c≠y} logit_c`` along the last axis; ``target`` has the leading shape."""
    classes = torch.arange(logits.shape[-1], device=logits.device)
    onehot = target.unsqueeze(-1) == classes  # (..., C); a comparison, not one_hot, so vmap can batch it
    true = (logits * onehot).sum(-1)
    others = logits.masked_fill(onehot, float("-inf")).logsumexp(-1)
    return true - others


def one_minus_p(logits: Tensor, target: Tensor) -> Tensor:
    """``1 − softmax(logits)[target]`` as ``sigmoid(−log-odds)``: exact even when p rounds to 1."""
    return torch.sigmoid(-log_odds(logits.float(), target))


class ClassificationMargin:
    """Log-odds margin of the true class; batch ``(inputs, labels)``, model -> logits (B, C).

    Keyword arguments are passed to the model's forward on every call.
    """

    name = "classification"

    def __init__(self, **forward_kwargs: Any) -> None:
        self.forward_kwargs = forward_kwargs

    def outputs(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> Tensor:
        x, y = batch
        return log_odds(_call(model, params, x, self.forward_kwargs), y)  # (B,)

    def q_weights(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> Tensor:
        x, y = batch
        with torch.no_grad():
            return one_minus_p(_call(model, params, x, self.forward_kwargs), y)  # (B,)

    def check_batch(self, batch: Sequence[Tensor]) -> None:
        if len(batch) != 2:
            raise DataError(f"classification batches are (inputs, labels); got {len(batch)} tensors")
        if batch[1].dtype not in (torch.int64, torch.int32) or batch[1].dim() != 1:
            raise DataError("classification labels must be a 1-d integer tensor (B,); cast them with .long()")


class LMLogOdds:
    """Mean per-token log-odds of the true next token over masked prediction positions.

    Keyword arguments are passed to the model's forward on every call. Without them, a model
    whose forward takes ``fused_attention`` (this package's GPT) gets ``fused_attention=False``:
    the fused attention kernel has no ``vmap`` batching rule, so per-example gradients would
    silently fall back to a slow loop.
    """

    name = "lm"

    def __init__(self, **forward_kwargs: Any) -> None:
        self.forward_kwargs = forward_kwargs

    def _kwargs(self, model: nn.Module) -> dict[str, Any]:
        if self.forward_kwargs or "fused_attention" not in inspect.signature(model.forward).parameters:
            return dict(self.forward_kwargs)
        return {"fused_attention": False}

    def _token_terms(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        tokens, mask = batch
        logits = _call(model, params, tokens, self._kwargs(model))[:, :-1]  # (B, L-1, V): position t predicts token t+1
        return logits, tokens[:, 1:], mask.to(logits.dtype)

    def outputs(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> Tensor:
        logits, target, mask = self._token_terms(model, params, batch)
        per_token = log_odds(logits, target)  # (B, L-1)
        return (per_token * mask).sum(-1) / mask.sum(-1)

    def q_weights(self, model: nn.Module, params: Params, batch: Sequence[Tensor]) -> Tensor:
        with torch.no_grad():
            logits, target, mask = self._token_terms(model, params, batch)
            q = one_minus_p(logits, target)  # (B, L-1)
            return (q * mask).sum(-1) / mask.sum(-1)

    def check_batch(self, batch: Sequence[Tensor]) -> None:
        if len(batch) != 2:
            raise DataError(f"lm batches are (tokens (B, L), mask (B, L-1)); got {len(batch)} tensors")
        tokens, mask = batch
        if tokens.dim() != 2 or mask.shape != (tokens.shape[0], tokens.shape[1] - 1):
            raise DataError(f"lm batch shapes must be tokens (B, L) and mask (B, L-1); got "
                            f"{tuple(tokens.shape)} and {tuple(mask.shape)} (see data.testset.padded_batch)")
        if bool((mask.sum(-1) <= 0).any()):
            raise DataError("an lm example has no prediction positions (its mask row is all zero); drop it")


OUTPUTS: dict[str, Callable[[], Any]] = {"classification": ClassificationMargin, "lm": LMLogOdds}


def get_output(task: str | OutputFunction) -> OutputFunction:
    """The output function for a task name (``classification``/``lm``) or an object passed through."""
    if isinstance(task, str):
        if task not in OUTPUTS:
            raise ConfigError(f"unknown task '{task}'{suggest(task, OUTPUTS)}; use one of {sorted(OUTPUTS)} "
                              "or pass an object with outputs/q_weights/check_batch methods")
        return OUTPUTS[task]()
    if not isinstance(task, OutputFunction):
        raise ConfigError(f"task must be a name in {sorted(OUTPUTS)} or an OutputFunction; got {type(task).__name__}")
    return task
