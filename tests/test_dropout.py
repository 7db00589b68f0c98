"""The CPU dropout: the built-in's behaviour with a cheaper mask."""
from __future__ import annotations

import pytest
import torch

from amr.model.dropout import Dropout, drop_mask


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    x = torch.rand(400_000, dtype=torch.float64) + 1.0  # no zeros: a zero output means dropped
    x.requires_grad_()
    layer = Dropout(p).train()
    y = layer(x)
    dropped = y == 0
    rate = dropped.double().mean().item()
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(rate - p) < 5 * sd, rate
    scale = 1.0 / (1.0 - round(p * 2**15) / 2**15)
    torch.testing.assert_close(y[~dropped], x[~dropped] * scale)
    # expectation preserved: E[y] = E[x]
    assert abs(y.mean().item() - x.mean().item()) < 0.01
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(grad, (~dropped).double() * scale)


def test_masks_are_independent_of_position_and_reproducible():
    torch.manual_seed(3)
    a, _ = drop_mask(torch.Size([64, 1000]), 0.5, torch.device("cpu"))
    # the four 15-bit lanes of each 64-bit word must not be correlated: every lane offset
    # (element index mod 4) drops at the same rate
    per_lane = a.flatten().view(-1, 4).double().mean(0)
    assert torch.all((per_lane - 0.5).abs() < 0.02), per_lane
    # neighbouring elements agree about half the time, as independent coin flips do
    same = (a.flatten()[1:] == a.flatten()[:-1]).double().mean().item()
    assert abs(same - 0.5) < 0.02
    torch.manual_seed(3)
    b, _ = drop_mask(torch.Size([64, 1000]), 0.5, torch.device("cpu"))
    assert torch.equal(a, b)
    c, _ = drop_mask(torch.Size([64, 1000]), 0.5, torch.device("cpu"))
    assert not torch.equal(a, c)


def test_eval_mode_and_zero_rate_are_the_identity():
    x = torch.randn(8, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_kernel_matches_the_torch_ops_exactly(monkeypatch, dtype):
    """The C pass gives bit for bit what x.mul(scale).masked_fill_(drop, 0) gives, both ways,
    on the same random draws; also for a non-contiguous input."""
    from amr.model import dropout as dropout_module
    from amr.model import native

    assert native.native_available(), native.build_error()
    x = torch.randn(70, 33, 40, dtype=dtype).transpose(0, 2)  # non-contiguous, odd sizes
    upstream = torch.randn(x.shape, dtype=dtype)

    def run(use_kernel: bool):
        monkeypatch.setattr(dropout_module, "_use_kernel", lambda t: use_kernel)
        torch.manual_seed(11)
        leaf = x.clone().requires_grad_()
        y = Dropout(0.3).train()(leaf)
        (grad,) = torch.autograd.grad(y, leaf, upstream)
        return y.detach(), grad

    (y_kernel, g_kernel), (y_torch, g_torch) = run(True), run(False)
    assert torch.equal(y_kernel, y_torch) and torch.equal(g_kernel, g_torch)
    assert 0.25 < (y_kernel == 0).double().mean().item() < 0.35
