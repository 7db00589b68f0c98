"""Per-boundary InfoNCE, report §3.3 Eq. (4).

For every side (start, end) of every GT span: the positive is the normalised mean of the K
audio projections just inside the boundary, the negatives the K frames just outside. All
sides of the batch are handled at once. As in the authors' code: boundaries are the span's ends
rounded to frames; spans narrower than 2 frames and recordings shorter than 2K + 2 frames are
skipped (too narrow to have an inside and an outside); the K "inside" frames are counted from
the boundary inwards even past the span's other end; a side without any outside frame (a span
touching the recording's edge) is skipped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from amr.model.spans import cw_to_se


def boundary_frames(spans, span_mask, lengths, k: int):
    """GT spans (B, W, 2) cw -> inside / outside frame indices and validity, each (B, W, 2, K)."""
    length = lengths[:, None]
    se = cw_to_se(spans).clamp(0.0, 1.0) * length[..., None].to(spans.dtype)
    start, end = torch.round(se[..., 0]).long(), torch.round(se[..., 1]).long()
    wide = (end - start >= 2) & (length >= 2 * k + 2)  # else no inside/outside to tell apart
    offsets = torch.arange(k, device=spans.device)
    start, end, length = start[..., None], end[..., None], length[..., None]
    inside = torch.stack([start + offsets, end - 1 - offsets], 2)
    inside_valid = torch.stack([start + offsets < length, end - 1 - offsets >= 0], 2)
    outside = torch.stack([start - 1 - offsets, end + offsets], 2)
    outside_valid = torch.stack([start - 1 - offsets >= 0, end + offsets < length], 2)
    real = (span_mask & wide)[..., None, None]
    return inside, inside_valid & real, outside, outside_valid & real


def boundary_contrast_loss(
    audio_embed: torch.Tensor,  # (B, L, D) l2-normalised ã_t
    text_embed: torch.Tensor,  # (B, D) l2-normalised q
    spans: torch.Tensor,  # (B, W, 2) GT cw, normalised by each recording's length
    span_mask: torch.Tensor,  # (B, W)
    lengths: torch.Tensor,  # (B,)
    k: int,
    tau: float,
) -> torch.Tensor:
    inside, inside_valid, outside, outside_valid = boundary_frames(spans, span_mask.bool(), lengths, k)
    batch = torch.arange(audio_embed.shape[0], device=audio_embed.device)[:, None, None, None]
    last = audio_embed.shape[1] - 1
    inside_embed = audio_embed[batch, inside.clamp(0, last)] * inside_valid[..., None]
    pooled = F.normalize(inside_embed.sum(-2), dim=-1)  # (B, W, 2, D); mean direction = sum direction
    positive = (pooled * text_embed[:, None, None, :]).sum(-1) / tau  # (B, W, 2)

    similarity = torch.einsum("bld,bd->bl", audio_embed, text_embed) / tau  # (B, L)
    outside_logits = similarity.gather(1, outside.clamp(0, last).flatten(1)).view(outside.shape)
    outside_logits = outside_logits.masked_fill(~outside_valid, float("-inf"))

    side_valid = outside_valid.any(-1) & inside_valid.any(-1)  # (B, W, 2)
    if not bool(side_valid.any()):
        return audio_embed.sum() * 0.0 + text_embed.sum() * 0.0
    logits = torch.cat([positive[..., None], outside_logits], -1)
    per_side = torch.logsumexp(logits, -1) - positive
    return per_side[side_valid].mean()
