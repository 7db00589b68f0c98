"""Dropout with a cheaper random mask on CPU.

``nn.Dropout`` on CPU draws one Bernoulli sample per element from torch's Mersenne twister
(about 9 ns each here, on one thread); a training step of the report's model drops ~100 M
activations, so mask generation alone cost over a second per step. ``Dropout`` instead takes one
64-bit seed per call from torch's default generator and gives element i a 15-bit uniform integer
by hashing (seed, i) with splitmix64 (``uniform15``); it is dropped when that integer is below
round(p · 2¹⁵). The drop probability is therefore p rounded to a multiple of 2⁻¹⁵
(0.1 → 0.100006) and the kept elements are scaled by 1 / (1 − that probability), so the
expectation is preserved exactly. ``torch.manual_seed`` makes the masks reproducible; as a draw
depends only on the seed and the element's index, they do not depend on the number of threads.

The mask, the scaled output and, backward, the masked gradient are one pass each way in a small
C kernel (``dropout_cpu.c``, built with the other CPU kernels by :mod:`amr.model.native`).
Without a C compiler the torch ops below compute the same integers and the same results, a
million elements at a time (their int64 temporaries stay small) and several times slower. The
backward keeps only the boolean mask (one byte per element), as the built-in does.

Off CPU (CUDA), and in eval mode, it is ``nn.functional.dropout`` itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from amr.model import native

RESOLUTION = 1 << 15  # 15-bit uniform integers
# splitmix64's constants, as the signed int64 values torch's wrapping arithmetic needs
_GAMMA, _MIX1, _MIX2 = (c - (1 << 64) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def draw_seed() -> int:
    """A 63-bit seed from torch's default generator (so torch.manual_seed governs the masks)."""
    return int(torch.empty((), dtype=torch.int64).random_())


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 values."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def uniform15(seed: int, numel: int, device: torch.device | str = "cpu", start: int = 0) -> torch.Tensor:
    """The 15-bit uniform integers (int64) of elements start .. start + numel - 1: the top 15
    bits of splitmix64(seed, i + 1).

    The torch-ops twin of ``uniform15`` in ``dropout_cpu.c``; int64 products wrap as uint64's do.
    """
    seed = seed - (1 << 64) if seed >= 1 << 63 else seed
    z = torch.arange(start + 1, start + numel + 1, dtype=torch.int64, device=device) * _GAMMA + seed
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return _shift_right(z ^ _shift_right(z, 31), 49)


def drop_threshold(p: float) -> tuple[int, float]:
    """Draws below the threshold are dropped; the scale 1 / (1 - exact drop probability)."""
    threshold = round(p * RESOLUTION)
    return threshold, RESOLUTION / (RESOLUTION - threshold)


# the torch-ops draws go this many elements at a time: their int64 temporaries stay small
MASK_CHUNK = 1 << 20


def drop_mask(shape: torch.Size, p: float, seed: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """Boolean mask, True = drop, each element independently with probability ~p; and the
    scale for the kept elements."""
    threshold, scale = drop_threshold(p)
    numel = shape.numel()
    drop = torch.empty(numel, dtype=torch.bool, device=device)
    for start in range(0, numel, MASK_CHUNK):
        count = min(MASK_CHUNK, numel - start)
        torch.lt(uniform15(seed, count, device, start), threshold, out=drop[start : start + count])
    return drop.view(shape), scale


def _use_kernel(x: torch.Tensor, native_kernel: bool) -> bool:
    return native_kernel and x.dtype in (torch.float32, torch.float64) and native.native_available()


class _MaskedScale(torch.autograd.Function):
    """out = x * scale, 0 where the element's draw from ``seed`` is dropped; saves only the mask."""

    @staticmethod
    def forward(ctx, x, seed, p, native_kernel):
        ctx.native_kernel = native_kernel
        if _use_kernel(x, native_kernel):
            threshold, scale = drop_threshold(p)
            out, drop = native.dropout_forward(x.contiguous(), seed, threshold, scale)
        else:
            drop, scale = drop_mask(x.shape, p, seed, x.device)
            out = x.mul(scale).masked_fill_(drop, 0.0)  # one pass fewer than masked_fill().mul_()
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        if _use_kernel(grad, ctx.native_kernel):
            grad_x = native.dropout_backward(grad.contiguous(), drop, ctx.scale)
        else:
            grad_x = grad.mul(ctx.scale).masked_fill_(drop, 0.0)
        return grad_x, None, None, None


def dropout(x: torch.Tensor, p: float, training: bool, native_kernel: bool = True) -> torch.Tensor:
    """``native_kernel``: on CPU, the C kernel (built at first use) rather than torch ops; the
    same masks and results either way."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    return _MaskedScale.apply(x, draw_seed(), p, native_kernel)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (same call, same ``p``; no parameters or state).

    ``native_cpu_kernels`` is set for the whole model from ``model.cpu_kernels``
    (``MomentDetector``); False never builds a C kernel."""

    def __init__(self, p: float = 0.5, native_cpu_kernels: bool = True):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p
        self.native_cpu_kernels = native_cpu_kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.native_cpu_kernels)

    def extra_repr(self) -> str:
        return f"p={self.p}"
