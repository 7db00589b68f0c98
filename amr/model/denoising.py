"""DN-DETR query denoising on the decoder side (report §3.4, Eq. 5).

For every ground-truth span, ``copies`` noised versions enter the decoder as extra queries.
Query layout along the query axis: [learnable (Q) | group 0 (W) | group 1 (W) | ...], where
group m holds the m-th noised copy of each of the (padded) W target spans of the sample.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from amr.model.transformer import inverse_sigmoid

EDGE = 1e-3  # noised centres and widths stay inside (0, 1), as in the authors' code
PADDING_ANCHOR = (0.5, 0.1)  # a slot without a target span: mid-recording, a tenth wide


@dataclass
class DenoisingQueries:
    anchors_unsigmoid: torch.Tensor  # (B, M*W, 2) reference points in logit space
    valid: torch.Tensor  # (B, M*W) True where the query comes from a real target span
    target_index: torch.Tensor  # (M*W,) which of the W target slots each query reconstructs
    copies: int


def noise_spans(spans: torch.Tensor, copies: int, sigma: float, generator=None) -> torch.Tensor:
    """(B, W, 2) cw -> (B, M*W, 2) noised copies, Eq. (5), clipped to [EDGE, 1 - EDGE]."""
    repeated = spans.repeat(1, copies, 1)
    noise = torch.randn(repeated.shape, generator=generator, device=spans.device, dtype=spans.dtype)
    return (repeated + sigma * noise).clamp(EDGE, 1.0 - EDGE)


def build_denoising_queries(
    spans: torch.Tensor, span_mask: torch.Tensor, copies: int, sigma: float, generator=None
) -> DenoisingQueries:
    num_slots = spans.shape[1]
    valid = span_mask.repeat(1, copies)
    noised = noise_spans(spans, copies, sigma, generator)
    padding = noised.new_tensor(PADDING_ANCHOR).expand_as(noised)
    return DenoisingQueries(
        anchors_unsigmoid=inverse_sigmoid(torch.where(valid[..., None], noised, padding)),
        valid=valid,
        target_index=torch.arange(num_slots, device=spans.device).repeat(copies),
        copies=copies,
    )


def denoising_attention_mask(num_learnable: int, dn: DenoisingQueries) -> torch.Tensor:
    """Decoder self-attention "may attend" mask (Qt, Qt), Qt = Q + M*W.

    The learnable queries and the denoising queries do not see each other (the report's
    isolation); the denoising queries see one another, every group and padding slot, as in the
    authors' code.
    """
    num_dn = dn.valid.shape[1]
    learnable = torch.arange(num_learnable + num_dn, device=dn.valid.device) < num_learnable
    return learnable[:, None] == learnable[None, :]
