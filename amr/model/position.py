"""Sinusoidal position encodings: per-frame (audio) and per-span (decoder reference points)."""
from __future__ import annotations

import math

import torch


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin on even and cos on odd features."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_frame_encoding(
    mask: torch.Tensor, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """DETR-style 1-D sine encoding of frame positions, (B, L) bool -> (B, L, dim).

    Positions are the running count of valid frames normalised by the recording's OWN number
    of valid frames, so a recording gets the same encoding whatever it is batched with.
    """
    counts = mask.float().cumsum(1)
    own_length = mask.float().sum(1, keepdim=True).clamp(min=1.0)
    positions = counts / (own_length + 1e-6) * scale
    angles = positions[..., None] / _frequencies(dim, temperature, mask.device)
    return _interleave_sin_cos(angles) * mask[..., None]


def sine_span_encoding(
    spans: torch.Tensor, dim: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine encoding of (centre, width) reference points, (..., 2) -> (..., dim).

    Half the features encode the centre and half the width (conditional / DAB-DETR style).
    """
    half = dim // 2
    freqs = _frequencies(half, temperature, spans.device)
    centre = _interleave_sin_cos(spans[..., 0:1] * scale / freqs)
    width = _interleave_sin_cos(spans[..., 1:2] * scale / freqs)
    return torch.cat([centre, width], dim=-1)
