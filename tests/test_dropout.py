"""The CPU dropout: the built-in's behaviour with a cheaper mask."""
from __future__ import annotations

import pytest
import torch

from amr.kernels.dropout import Dropout, draw_seed, drop_mask, keep_scale, uniform15


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


def reference_draws(seed: int, i: int) -> int:
    """Python integers, Wellons' published lowbias32 on counter i // 2 of the seed's stream:
    the reference for ``uniform15``."""
    mask = (1 << 32) - 1
    key, mult = seed & mask, ((seed >> 32) & mask) | 1
    h = ((i // 2) * mult + key) & mask
    h ^= h >> 16
    h = (h * 0x7FEB352D) & mask
    h ^= h >> 15
    h = (h * 0x846CA68B) & mask
    h ^= h >> 16
    return (h >> (16 * (i % 2))) & 0x7FFF


def test_draws_are_lowbias32_fields():
    for seed in (0, 12345, (1 << 63) - 1, 0x0123456789ABCDEF):
        draws = uniform15(seed, 1001)
        assert draws.min() >= 0 and draws.max() < 2**15
        assert [int(v) for v in draws[[0, 1, 2, 999, 1000]]] == [reference_draws(seed, i) for i in (0, 1, 2, 999, 1000)]


def test_masks_are_independent_of_position_and_reproducible():
    torch.manual_seed(3)
    seed = draw_seed()
    a, _ = drop_mask(torch.Size([64, 1000]), 0.5, seed)
    # neighbouring elements (successive counters) must not be correlated: every offset mod 4
    # drops at the same rate, and neighbours agree about half the time, as independent coin flips do
    per_offset = a.flatten().view(-1, 4).double().mean(0)
    assert torch.all((per_offset - 0.5).abs() < 0.02), per_offset
    same = (a.flatten()[1:] == a.flatten()[:-1]).double().mean().item()
    assert abs(same - 0.5) < 0.02
    # the two fields of one hash (elements 2c, 2c + 1) drop together as often as independent draws
    p = 0.1
    b, _ = drop_mask(torch.Size([200_000]), p, seed)
    both = (b[0::2] & b[1::2]).double().mean().item()
    assert abs(both - p * p) < 5 * (p * p / 100_000) ** 0.5, both
    torch.manual_seed(3)
    assert torch.equal(a, drop_mask(torch.Size([64, 1000]), 0.5, draw_seed())[0])
    assert not torch.equal(a, drop_mask(torch.Size([64, 1000]), 0.5, draw_seed())[0])


def test_eval_mode_and_zero_rate_are_the_identity():
    x = torch.randn(8, 5)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.count_nonzero(Dropout(1.0).train()(x)) == 0
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_kernel_matches_the_torch_ops_exactly(monkeypatch, dtype):
    """The C pass draws the same mask as the torch ops and gives bit for bit what
    x.mul(scale).masked_fill_(drop, 0) gives (+0 where dropped), both ways; also for a non-contiguous input and for
    any number of threads."""
    from amr.kernels import native

    assert native.native_available(), native.build_error()
    x = torch.randn(70, 33, 40, dtype=dtype).transpose(0, 2)  # non-contiguous, odd sizes
    upstream = torch.randn(x.shape, dtype=dtype)

    def run(use_kernel: bool, threads: int = 2):
        monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
        torch.manual_seed(11)
        leaf = x.clone().requires_grad_()
        y = Dropout(0.3, native_cpu_kernels=use_kernel).train()(leaf)
        (grad,) = torch.autograd.grad(y, leaf, upstream)
        return y.detach(), grad

    (y_kernel, g_kernel), (y_torch, g_torch) = run(True), run(False)
    assert torch.equal(y_kernel, y_torch) and torch.equal(g_kernel, g_torch)
    # the same bits, also the sign of the zeros (torch.equal takes -0 for +0)
    assert torch.equal(torch.signbit(y_kernel), torch.signbit(y_torch))
    assert torch.equal(torch.signbit(g_kernel), torch.signbit(g_torch))
    y_one, g_one = run(True, threads=1)
    assert torch.equal(y_one, y_kernel) and torch.equal(g_one, g_kernel)
    assert 0.25 < (y_kernel == 0).double().mean().item() < 0.35


def test_torch_draws_in_pieces_equal_one_piece(monkeypatch):
    from amr.kernels import dropout as dropout_module

    whole, _ = drop_mask(torch.Size([37, 101]), 0.2, 99)
    monkeypatch.setattr(dropout_module, "MASK_CHUNK", 500)  # 4 pieces of counters, the last one short
    pieces, _ = drop_mask(torch.Size([37, 101]), 0.2, 99)
    assert torch.equal(whole, pieces)
    assert torch.equal(whole.flatten(), uniform15(99, 37 * 101) < round(0.2 * 2**15))
    # the torch path's factor: the same mask, the scale where kept
    factor = keep_scale(torch.Size([37, 101]), 0.2, 99, torch.float64)
    assert torch.equal(factor == 0, whole)
    assert torch.all(factor[~whole] == 1.0 / (1.0 - round(0.2 * 2**15) / 2**15))


def test_cpu_kernels_knob_torch_never_builds_and_gives_the_same_training_step(monkeypatch):
    """`model.cpu_kernels: torch` never builds or loads a C kernel. Without Mamba, `native` gives
    the same loss and gradients bit for bit (the dropout masks are the same draws); with Mamba
    (slot 3) the same loss, and gradients equal up to float rounding: the C scan's backward sums
    in another order than the eager one."""
    import dataclasses

    from model_batches import make_batch, small_config

    from amr.kernels import native
    from amr.losses import build_criterion
    from amr.model import build_model

    data = make_batch([30, 21, 17, 40], [[(3, 9)], [(0, 5), (12, 21)], [(16, 17)], [(10, 30)]])
    slot1 = small_config(coarse=True, rerank=True, cascade=True)
    slot3 = small_config(coarse=True, rerank=True, mamba=True, boundary_contrast=True, dn=True, cascade=True)

    def step(cfg, kernels: str):
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, cpu_kernels=kernels)))
        criterion = build_criterion(model.cfg)
        model.train()
        torch.manual_seed(5)
        terms = criterion(model(data), data)
        total = sum(terms[k] * w for k, w in criterion.weight_dict.items() if k in terms)
        total.backward()
        return total.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    native_runs = {name: step(cfg, "native") for name, cfg in (("slot1", slot1), ("slot3", slot3))}
    assert native.native_available(), native.build_error()

    def no_compiler():
        raise AssertionError("a C kernel was built although model.cpu_kernels is torch")

    monkeypatch.setattr(native, "_load", no_compiler)
    monkeypatch.setitem(native._STATE, "libs", None)
    monkeypatch.setitem(native._STATE, "error", None)
    for name, cfg in (("slot1", slot1), ("slot3", slot3)):
        (native_loss, native_grads), (torch_loss, torch_grads) = native_runs[name], step(cfg, "torch")
        assert torch.equal(native_loss, torch_loss), name
        assert native_grads.keys() == torch_grads.keys()
        for param, grad in native_grads.items():
            if name == "slot1":
                assert torch.equal(grad, torch_grads[param]), param
            else:  # float32 rounding, carried through the backward pass
                torch.testing.assert_close(grad, torch_grads[param], rtol=1e-4, atol=1e-5, msg=param)


def test_auto_cpu_kernels_take_the_c_kernels_where_they_build(monkeypatch):
    """`model.cpu_kernels: auto` (both presets): native where the compiler builds the kernels,
    torch ops where it does not, and the model says which."""
    import dataclasses

    from model_batches import small_config

    from amr.kernels import native
    from amr.model import build_model
    from amr.model.detector import cpu_kernels_in_use

    cfg = small_config(mamba=True)
    auto = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, cpu_kernels="auto"))
    assert native.native_available(), native.build_error()
    assert cpu_kernels_in_use(build_model(auto)) == "native"
    monkeypatch.setitem(native._STATE, "error", native.NativeBuildError("no C compiler found"))
    model = build_model(auto)
    assert cpu_kernels_in_use(model) == "torch"
    assert not any(getattr(m, "native_cpu_kernels", False) for m in model.modules())
