"""Small heads of the report's components: span re-ranking (§3.2), boundary contrast (§3.3).

Also the span -> frame-interval conversion shared by re-ranking and the cascade crop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amr.model.spans import cw_to_se


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x (B, N, D) over the True entries of mask (B, N) -> (B, D)."""
    weights = mask.to(x.dtype)
    return (x * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1.0)


def span_frame_interval(
    spans: torch.Tensor, lengths: torch.Tensor, margin: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, w) spans (B, Q, 2) -> frame interval [start, end) per span, widened by ``margin``.

    Uses each recording's OWN length (B,), never the padded one; the interval is clipped to
    [0, length) and always holds at least one frame.
    """
    se = cw_to_se(spans.detach())
    length = lengths.to(se.dtype)[:, None]
    start = torch.floor(se[..., 0] * length).long() - margin
    end = torch.ceil(se[..., 1] * length).long() + margin
    last = (lengths[:, None] - 1).clamp(min=0)
    start = torch.minimum(start.clamp(min=0), last)
    end = torch.maximum(torch.minimum(end, lengths[:, None]), start + 1)
    return start, end


class RerankHead(nn.Module):
    """Eq. (3): cosine between the memory mean-pooled over each (detached) predicted span and
    the pooled query text. The span is detached, the memory is not: the term regularises the
    encoder ("a training-time encoder regularizer"), as in the authors' code.

    Returns ½(⟨g_i, q⟩ + 1) in [0, 1] for every decoder query, (B, Q).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.span_proj = nn.Linear(dim, dim)
        self.text_proj = nn.Linear(dim, dim)

    def forward(self, memory, lengths, spans, text_pooled):
        start, end = span_frame_interval(spans, lengths)
        frames = torch.arange(memory.shape[1], device=memory.device)
        inside = (frames >= start[..., None]) & (frames < end[..., None])  # (B, Q, L)
        weights = inside.to(memory.dtype) / inside.sum(-1, keepdim=True).to(memory.dtype)
        pooled = torch.bmm(weights, memory)
        g = F.normalize(self.span_proj(pooled), dim=-1)
        q = F.normalize(self.text_proj(text_pooled), dim=-1)
        return 0.5 * ((g * q[:, None, :]).sum(-1) + 1.0)


class BoundaryProjection(nn.Module):
    """§3.3: l2-normalised audio projections ã_t of the memory and text projection q."""

    def __init__(self, dim: int):
        super().__init__()
        self.audio_proj = nn.Linear(dim, dim)
        self.text_proj = nn.Linear(dim, dim)

    def forward(self, memory, text_pooled):
        return F.normalize(self.audio_proj(memory), dim=-1), F.normalize(self.text_proj(text_pooled), dim=-1)
