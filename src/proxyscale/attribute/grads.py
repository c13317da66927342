"""Per-example gradients of an output function, w.r.t. all parameters or a chosen subset.

Models are an ``nn.Module`` (the architecture) plus a checkpoint (a state dict). Gradients come
from ``torch.func``: ``vmap(grad(f))`` over the examples of a batch, with ``functional_call``
so the module itself is never mutated. With a parameter subset only the subset is an argument
of ``grad``; every other parameter enters as a constant, so autograd builds no weight-gradient
work for it (and back-propagation stops below the lowest selected layer).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from ..config import suggest
from ..errors import ConfigError
from .outputs import OutputFunction, example_output

ParamFilter = Union[None, str, Sequence[str], Callable[[str], bool]]


def select_params(model: nn.Module, param_filter: ParamFilter = None) -> tuple[str, ...]:
    """Names of the parameters to differentiate, in ``named_parameters`` order.

    ``param_filter`` is ``None`` (all), a name or module prefix (``"head"`` matches
    ``head.weight`` and ``head.bias``), a sequence of those, or a predicate on the name.
    """
    names = [n for n, _ in model.named_parameters()]
    if param_filter is None:
        chosen = names
    elif callable(param_filter):
        chosen = [n for n in names if param_filter(n)]
    else:
        entries = [param_filter] if isinstance(param_filter, str) else list(param_filter)
        for e in entries:
            if not any(_matches(n, e) for n in names):
                raise ConfigError(f"param_filter entry '{e}' matches no parameter{suggest(e, names)}; "
                                  f"parameters are: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}")
        chosen = [n for n in names if any(_matches(n, e) for e in entries)]
    if not chosen:
        raise ConfigError("param_filter selects no parameters; pass None for all, or names/prefixes of parameters")
    return tuple(chosen)


def _matches(name: str, entry: str) -> bool:
    return name == entry or name.startswith(entry.rstrip(".") + ".")


def num_params(model: nn.Module, names: Sequence[str]) -> int:
    """Total number of scalars in the named parameters."""
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in names)


def checkpoint_tensors(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The parameters and buffers of ``state`` that ``functional_call`` needs, detached.

    Tied parameters appear once (under their ``named_parameters`` name). A state dict of another
    architecture (missing or unknown keys) is a :class:`ConfigError`.
    """
    wanted = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    known = set(model.state_dict().keys())
    missing = [n for n in wanted if n not in state]
    unknown = [k for k in state if k not in known]
    if missing or unknown:
        raise ConfigError(f"checkpoint does not fit the model: missing {missing[:5]}, unknown {unknown[:5]}; "
                          "pass a state dict saved from this architecture")
    return {n: state[n].detach() for n in wanted}


class PerExampleGrads:
    """Flattened per-example gradients (B, p_sub) of ``output`` w.r.t. the parameters ``names``.

    ``chunk_size`` bounds how many examples ``vmap`` processes at once (memory); ``None`` = all.
    """

    def __init__(self, model: nn.Module, output: OutputFunction, names: Sequence[str],
                 chunk_size: int | None = None) -> None:
        self.model = model.eval()  # dropout/batch-norm statistics must not depend on the batch
        self.output = output
        self.names = tuple(names)
        self.chunk_size = chunk_size

        def f(sub: dict[str, Tensor], rest: dict[str, Tensor], *example: Tensor) -> Tensor:
            return example_output(output, model, {**rest, **sub}, example)

        self._grad = torch.func.grad(f)

    def split(self, tensors: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(differentiated subset, constants) of a checkpoint's tensors."""
        sub = {n: tensors[n] for n in self.names}
        rest = {n: t for n, t in tensors.items() if n not in sub}
        return sub, rest

    def __call__(self, tensors: Mapping[str, Tensor], batch: Sequence[Tensor]) -> Tensor:
        """Gradients for every example of ``batch``, concatenated in ``names`` order: (B, p_sub)."""
        sub, rest = self.split(tensors)
        in_dims = (None, None) + (0,) * len(batch)
        g = torch.func.vmap(self._grad, in_dims=in_dims, chunk_size=self.chunk_size)(sub, rest, *batch)
        b = batch[0].shape[0]
        return torch.cat([g[n].reshape(b, -1) for n in self.names], dim=1)  # (B, p_sub)
