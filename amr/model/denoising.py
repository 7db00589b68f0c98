"""DN-DETR query denoising on the decoder side (report §3.4, Eq. 5).

For every ground-truth span, ``copies`` noised versions enter the decoder as extra queries.
Query layout along the query axis: [learnable (Q) | group 0 (W) | group 1 (W) | ...], where
group m holds the m-th noised copy of each of the (padded) W target spans of the sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from amr.model.transformer import inverse_sigmoid

MIN_WIDTH = 1e-3  # a noised width never collapses to zero


@dataclass
class DenoisingQueries:
    anchors_unsigmoid: torch.Tensor  # (B, M*W, 2) reference points in logit space
    valid: torch.Tensor  # (B, M*W) True where the query comes from a real target span
    target_index: torch.Tensor  # (M*W,) which of the W target slots each query reconstructs
    copies: int


def noise_spans(spans: torch.Tensor, copies: int, sigma: float, generator=None) -> torch.Tensor:
    """(B, W, 2) cw -> (B, M*W, 2) noised copies, Eq. (5), clipped to [0, 1] with width > 0."""
    repeated = spans.repeat(1, copies, 1)
    noise = torch.randn(repeated.shape, generator=generator, device=spans.device, dtype=spans.dtype)
    noised = repeated + sigma * noise
    centre = noised[..., 0].clamp(0.0, 1.0)
    width = noised[..., 1].clamp(MIN_WIDTH, 1.0)
    return torch.stack([centre, width], dim=-1)


def build_denoising_queries(
    spans: torch.Tensor, span_mask: torch.Tensor, copies: int, sigma: float, generator=None
) -> DenoisingQueries:
    num_slots = spans.shape[1]
    noised = noise_spans(spans, copies, sigma, generator)
    return DenoisingQueries(
        anchors_unsigmoid=inverse_sigmoid(noised),
        valid=span_mask.repeat(1, copies),
        target_index=torch.arange(num_slots, device=spans.device).repeat(copies),
        copies=copies,
    )


def denoising_attention_mask(num_learnable: int, dn: DenoisingQueries) -> torch.Tensor:
    """Decoder self-attention "may attend" mask (B, Q + M*W, Q + M*W).

    Learnable queries see only learnable queries; each denoising group sees only itself, and
    inside a group only its real queries. Every query may attend to itself, so a group made
    of padding alone still has a key (its outputs are ignored by the loss).
    """
    batch, num_dn = dn.valid.shape
    group_size = num_dn // dn.copies if dn.copies else 0
    device = dn.valid.device
    group = torch.cat([
        torch.full((num_learnable,), -1, device=device),
        torch.arange(dn.copies, device=device).repeat_interleave(group_size),
    ])
    same_group = group[:, None] == group[None, :]  # (Qt, Qt)
    key_valid = torch.cat([torch.ones(batch, num_learnable, dtype=torch.bool, device=device), dn.valid], 1)
    eye = torch.eye(group.numel(), dtype=torch.bool, device=device)
    return same_group[None] & (key_valid[:, None, :] | eye[None])
