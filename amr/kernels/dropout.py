"""Dropout with a cheaper, reproducible random mask on CPU.

``nn.Dropout`` on CPU draws one Bernoulli sample per element from torch's Mersenne twister
(about 9 ns each here, on one thread); a training step of the report's model drops ~100 M
activations, so mask generation alone cost over a second per step. ``Dropout`` instead takes one
64-bit seed per call from torch's default generator and gives each element a 15-bit uniform
integer from a counter-based hash: every pair of elements shares one 32-bit hash (Wellons'
lowbias32 of ``c * mult + key``, key and odd multiplier from the seed), its low and high 15-bit
fields drawing the two. An element is dropped when its integer is below round(p · 2¹⁵), so the
drop probability is p rounded to a multiple of 2⁻¹⁵ (0.1 → 0.100006), and the kept elements are
scaled by 1 / (1 − that probability): the expectation is preserved exactly.
``torch.manual_seed`` makes the masks reproducible; as a draw depends only on the seed and the
element's index, they do not depend on the number of threads.

The mask, the scaled output and, backward, the masked gradient are one pass each way in a small
C kernel (``dropout_cpu.c``, built with the other CPU kernels by :mod:`amr.kernels.native`).
Without a C compiler the torch ops below compute the same integers and the same results: the
hash is 32-bit wrapping arithmetic, which torch vectorises, on half as many counters as elements.
The C pass keeps only the boolean mask for the backward (one byte per element), as the built-in
does. The torch ops keep a float keep-scale instead (``scale`` where kept, 0 where dropped; four
bytes per element): multiplying by it is one vectorised pass each way, several times cheaper on
CPU than ``masked_fill_`` with a boolean mask.

Off CPU (CUDA), and in eval mode, it is ``nn.functional.dropout`` itself.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from amr.kernels import native

RESOLUTION = 1 << 15  # 15-bit uniform integers
FIELD = RESOLUTION - 1
_MIX1, _MIX2 = 0x7FEB352D, 0x846CA68B  # lowbias32's multipliers


def _int32(value: int) -> int:
    """The int32 with the bits of uint32 ``value`` (what torch's wrapping int32 ops need)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def draw_seed() -> int:
    """A 63-bit seed from torch's default generator (so torch.manual_seed governs the masks)."""
    return int(torch.empty((), dtype=torch.int64).random_())


def stream(seed: int) -> tuple[int, int]:
    """(key, odd multiplier) of a call's counter stream, as uint32 values."""
    return seed & 0xFFFFFFFF, ((seed >> 32) & 0xFFFFFFFF) | 1


def pair_hashes(seed: int, count: int, start: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 32-bit hashes (as int32) of counters start .. start + count - 1: the torch twin of
    ``pair_hash`` in ``dropout_cpu.c``; int32 products wrap as uint32's do."""
    key, mult = stream(seed)
    h = torch.arange(start, start + count, dtype=torch.int32, device=device)
    h.mul_(_int32(mult)).add_(_int32(key))
    for shift, multiplier in ((16, _MIX1), (15, _MIX2)):
        h ^= (h >> shift) & ((1 << (32 - shift)) - 1)  # a logical shift of the uint32 bits
        h.mul_(_int32(multiplier))
    h ^= (h >> 16) & 0xFFFF
    return h


def uniform15(seed: int, numel: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 15-bit uniform integers (int64) of elements 0 .. numel - 1 (tests and analysis; the
    mask below does not build them)."""
    h = pair_hashes(seed, (numel + 1) // 2, device=device).to(torch.int64)
    return torch.stack([h & FIELD, (h >> 16) & FIELD], 1).flatten()[:numel]


def drop_threshold(p: float) -> tuple[int, float]:
    """Draws below the threshold are dropped; the scale 1 / (1 - exact drop probability)."""
    threshold = round(p * RESOLUTION)
    return threshold, RESOLUTION / (RESOLUTION - threshold)


# the torch-ops draws go this many counters at a time: their int32 temporaries stay in cache
MASK_CHUNK = 1 << 17
# the two 16-bit halves of an int32, in memory order, are its low then its high field here
_LOW_HALF_FIRST = sys.byteorder == "little"


def _field_chunks(seed: int, pairs: int, device):
    """(start, 15-bit fields of hashes start .. start + count - 1 in element order), a chunk of
    counters at a time: element 2c draws the low field of hash c, element 2c + 1 the high one."""
    for start in range(0, pairs, MASK_CHUNK):
        count = min(MASK_CHUNK, pairs - start)
        h = pair_hashes(seed, count, start, device)
        # on a little-endian machine the hashes viewed as int16 lay the fields out in element order
        fields = h.view(torch.int16) if _LOW_HALF_FIRST else torch.stack([h, h >> 16], 1).flatten()
        yield start, fields.bitwise_and_(FIELD)


def drop_mask(shape: torch.Size, p: float, seed: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """Boolean mask, True = drop, each element independently with probability ~p; and the
    scale for the kept elements."""
    threshold, scale = drop_threshold(p)
    numel = shape.numel()
    pairs = (numel + 1) // 2
    drop = torch.empty(2 * pairs, dtype=torch.bool, device=device)
    for start, fields in _field_chunks(seed, pairs, device):
        torch.lt(fields, threshold, out=drop[2 * start: 2 * start + fields.numel()])
    return drop[:numel].view(shape), scale


def keep_scale(shape: torch.Size, p: float, seed: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The mask of :func:`drop_mask` as a factor: ``scale`` where an element is kept, 0 where
    it is dropped."""
    threshold, scale = drop_threshold(p)
    numel = shape.numel()
    pairs = (numel + 1) // 2
    factor = torch.empty(2 * pairs, dtype=dtype, device=device)
    for start, fields in _field_chunks(seed, pairs, device):
        piece = factor[2 * start: 2 * start + fields.numel()]
        piece.copy_(fields.ge_(threshold))  # 1 where kept
        piece.mul_(scale)
    return factor[:numel].view(shape)


def _apply_factor(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # x · 0 is -0 for a negative x; adding +0 makes it +0, as the C pass writes (every other
    # value is unchanged by it), so that both paths give the same bits
    return x.mul(factor).add_(0.0)


def _use_kernel(x: torch.Tensor, native_kernel: bool) -> bool:
    return native_kernel and x.dtype in (torch.float32, torch.float64) and native.native_available()


class _MaskedScale(torch.autograd.Function):
    """out = x * scale, 0 where the element's draw from ``seed`` is dropped; saves the mask (C
    pass) or the keep-scale (torch ops) for the backward."""

    @staticmethod
    def forward(ctx, x, seed, p, native_kernel):
        if _use_kernel(x, native_kernel):
            threshold, scale = drop_threshold(p)
            out, drop = native.dropout_forward(x.contiguous(), *stream(seed), threshold, scale)
            ctx.save_for_backward(drop)
            ctx.scale = scale
        else:
            factor = keep_scale(x.shape, p, seed, x.dtype, x.device)
            out = _apply_factor(x, factor)
            ctx.save_for_backward(factor)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        if saved.dtype == torch.bool:  # the C pass's mask
            grad_x = native.dropout_backward(grad.contiguous(), saved, ctx.scale)
        else:
            grad_x = _apply_factor(grad, saved)
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
