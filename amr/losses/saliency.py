"""QD-DETR's saliency loss (report Eq. 1, λ_s), on per-frame labels covering all GT windows.

Three parts, as in QD-DETR:
- margin ranking: a frame inside a GT window should out-score a frame outside by ``margin``.
  QD-DETR samples a few (inside, outside) pairs per clip; here every pair is used, which is
  the expectation of that sampling and needs no random draw;
- rank contrast: softmax over the frames of the positive pass and the negative-query pass,
  pulling up the frames inside the windows (temperature 0.5);
- negative query: with a mismatched text every frame should score low.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RANK_TEMPERATURE = 0.5
# QD-DETR sums the rank contrast over 11 label levels and divides by 12; binary labels only
# populate level 1, and the same normalisation keeps the term at the scale its weight expects
RANK_LEVELS = 11
RANK_NORMALISER = 12.0
PAIR_SCALE = 2.0  # QD-DETR's factor on the margin term ("to keep the loss the same scale")


def margin_ranking(scores, labels, mask, margin: float) -> torch.Tensor:
    positive = (labels > 0) & mask
    negative = (labels <= 0) & mask
    pairs = positive[:, :, None] & negative[:, None, :]  # (B, L_pos, L_neg)
    hinge = (margin + scores[:, None, :] - scores[:, :, None]).clamp(min=0)
    per_clip = (hinge * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)
    has_pairs = pairs.flatten(1).any(1)
    if not bool(has_pairs.any()):
        return scores.sum() * 0.0
    return PAIR_SCALE * per_clip[has_pairs].mean()


def rank_contrast(scores, labels, mask) -> torch.Tensor:
    logits = torch.where(mask, scores / RANK_TEMPERATURE, torch.full_like(scores, -1e3))
    log_prob = F.log_softmax(logits, dim=1)
    total = scores.sum() * 0.0
    top = min(RANK_LEVELS, int(labels.max().item()) if labels.numel() else 0)
    for level in range(1, top + 1):
        positive = (labels >= level) & mask
        count = positive.sum(1)
        mean_log_prob = (log_prob * positive).sum(1) / count.clamp(min=1)
        total = total - (mean_log_prob * (count > 0)).mean()
    return total / RANK_NORMALISER


def saliency_loss(
    scores: torch.Tensor,  # (B, L) logits of the positive pass
    labels: torch.Tensor,  # (B, L) 1 inside any GT window, else 0
    mask: torch.Tensor,  # (B, L) True on real frames
    margin: float,
    scores_neg: torch.Tensor | None = None,  # (B, L) logits with a mismatched query
) -> torch.Tensor:
    mask = mask.bool()
    labels = labels.to(scores.dtype) * mask
    loss = margin_ranking(scores, labels, mask, margin)
    if scores_neg is None:
        return loss + rank_contrast(scores, labels, mask)
    both = torch.cat([scores, scores_neg], 1)
    loss = loss + rank_contrast(both, torch.cat([labels, torch.zeros_like(labels)], 1), torch.cat([mask, mask], 1))
    # -log(1 - sigmoid(s)) summed over the real frames, as in QD-DETR
    return loss + (F.softplus(scores_neg) * mask).sum(1).mean()
