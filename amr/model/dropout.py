"""Dropout with a cheaper random mask on CPU.

``nn.Dropout`` on CPU draws one Bernoulli sample per element (about 9 ns each here); a training
step of the report's model drops ~100 M activations, so mask generation alone cost over a second
per step. ``Dropout`` draws 64 random bits at a time instead and cuts them into four 15-bit
uniform integers: element i is dropped when its integer is below round(p · 2¹⁵). The drop
probability is therefore p rounded to a multiple of 2⁻¹⁵ (0.1 → 0.100006) and the kept elements
are scaled by 1 / (1 − that probability), so the expectation is preserved exactly. The random
bits come from torch's default generator: ``torch.manual_seed`` makes masks reproducible.

Applying the mask is one pass each way: a small C kernel (``dropout_cpu.c``, built with the other
CPU kernels by :mod:`amr.model.native`) computes the mask, the scaled output and, backward, the
masked gradient, exactly as ``x.mul(scale).masked_fill_(drop, 0)`` would; without a C compiler
those torch calls do it, with the same results. Its backward keeps only the boolean mask (one
byte per element), as the built-in does.

Off CPU (CUDA), and in eval mode, it is ``nn.functional.dropout`` itself.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from amr.model import native

RESOLUTION = 1 << 15  # 15-bit uniform integers


def random_lanes(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """One int16 per element whose low 15 bits are uniform, from torch's default generator."""
    numel = shape.numel()
    # random_() on int64 gives 63 uniform bits: four 16-bit lanes, the top one missing its sign
    # bit, so each lane keeps its low 15 bits.
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_()
    return words.view(torch.int16)[:numel].view(shape)


def drop_threshold(p: float) -> tuple[int, float]:
    """Lanes below the threshold are dropped; the scale 1 / (1 - exact drop probability)."""
    threshold = round(p * RESOLUTION)
    return threshold, RESOLUTION / (RESOLUTION - threshold)


def drop_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """Boolean mask, True = drop, each element independently with probability ~p; and the
    scale for the kept elements."""
    threshold, scale = drop_threshold(p)
    return random_lanes(shape, device).bitwise_and_(RESOLUTION - 1) < threshold, scale


def _use_kernel(x: torch.Tensor) -> bool:
    return x.dtype in (torch.float32, torch.float64) and native.native_available()


class _MaskedScale(torch.autograd.Function):
    """out = x * scale, 0 where the lane is below the threshold; saves only the bool mask."""

    @staticmethod
    def forward(ctx, x, lanes, threshold, scale):
        if _use_kernel(x):
            out, drop = native.dropout_forward(x.contiguous(), lanes, threshold, scale)
        else:
            drop = lanes.bitwise_and_(RESOLUTION - 1) < threshold
            out = x.mul(scale).masked_fill_(drop, 0.0)  # one pass fewer than masked_fill().mul_()
        ctx.save_for_backward(drop)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        if _use_kernel(grad):
            grad_x = native.dropout_backward(grad.contiguous(), drop, ctx.scale)
        else:
            grad_x = grad.mul(ctx.scale).masked_fill_(drop, 0.0)
        return grad_x, None, None, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    threshold, scale = drop_threshold(p)
    return _MaskedScale.apply(x, random_lanes(x.shape, x.device), threshold, scale)


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (same call, same ``p``; no parameters or state)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
