"""The tied output layer's hand-written backward equals autograd's on the plain product."""
import pytest
import torch

from proxyscale.models.readout import NARROW, tied_readout


def _grads(fn, h, w, g):
    h = h.clone().requires_grad_()
    w = w.clone().requires_grad_()
    out = fn(h, w)
    out.backward(g)
    return out.detach(), h.grad, w.grad


@pytest.mark.parametrize("d", [1, 2, NARROW])
@pytest.mark.parametrize("stacked", [False, True])
def test_readout_matches_autograd_float64(d: int, stacked: bool) -> None:
    gen = torch.Generator().manual_seed(d)
    lead = (3,) if stacked else ()
    h = torch.randn(*lead, 50, d, generator=gen, dtype=torch.float64)
    w = torch.randn(*lead, 17, d, generator=gen, dtype=torch.float64)
    g = torch.randn(*lead, 50, 17, generator=gen, dtype=torch.float64)
    ours = _grads(tied_readout, h, w, g)
    plain = _grads(lambda a, b: a @ b.mT, h, w, g)
    for a, b in zip(ours, plain):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_readout_under_autocast_keeps_input_dtypes() -> None:
    gen = torch.Generator().manual_seed(0)
    h, w, g = torch.randn(64, 4, generator=gen), torch.randn(32, 4, generator=gen), torch.randn(64, 32, generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
        out = tied_readout(hr, wr)
        hp, wp = h.clone().requires_grad_(), w.clone().requires_grad_()
        ref = hp @ wp.mT
    assert out.dtype == ref.dtype == torch.bfloat16
    out.backward(g.to(out.dtype))
    ref.backward(g.to(ref.dtype))
    assert hr.grad.dtype == torch.float32 and wr.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), ref.float(), rtol=0, atol=0)
    # bf16 products: agree to bf16 precision (summation order may differ)
    torch.testing.assert_close(hr.grad, hp.grad, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(wr.grad, wp.grad, rtol=2e-2, atol=2e-2)


def test_readout_under_torch_func_per_example_grads() -> None:
    gen = torch.Generator().manual_seed(1)
    h, w = torch.randn(5, 7, 4, generator=gen, dtype=torch.float64), torch.randn(11, 4, generator=gen,
                                                                               dtype=torch.float64)

    def loss(w_, h1):
        return tied_readout(h1, w_).logsumexp(-1).sum()

    per_ex = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(w, h)
    for i in range(5):
        wi = w.clone().requires_grad_()
        (wi @ h[i].mT).mT.logsumexp(-1).sum().backward()
        torch.testing.assert_close(per_ex[i], wi.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d, hand_written", [(NARROW, True), (NARROW + 1, False)])
def test_hand_written_backward_only_for_narrow_models(d: int, hand_written: bool) -> None:
    h = torch.randn(6, d, requires_grad=True)
    out = tied_readout(h, torch.randn(5, d, requires_grad=True))
    assert ("TiedReadout" in type(out.grad_fn).__name__) == hand_written
    with torch.no_grad():  # nothing to differentiate: the plain product
        assert out.grad_fn is not None and tied_readout(h, torch.randn(5, d)).grad_fn is None
