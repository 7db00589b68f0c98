"""QD-DETR's saliency loss (report Eq. 1, λ_s), on the labels of ``loss.saliency_windows`` (the
authors' loader: the frames of each query's first window) and the pairs of
``loss.saliency_pairs`` (the authors': two sampled (inside, outside) frame pairs).

Three parts, as in QD-DETR:
- margin ranking: on each sampled pair, the inside frame should out-score the outside frame
  by ``margin`` (hinge summed over pairs, divided by queries x pairs, times 2); with no sampled
  pairs, the mean over every (inside, outside) pair of a query, its expectation;
- rank contrast: softmax over the frames of the positive pass and the negative-query pass,
  pulling up the labelled frames (temperature 0.5);
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


def margin_ranking(scores, pairs, valid, margin: float) -> torch.Tensor:
    """On sampled pairs: scores (B, L); pairs (B, P, 2) frame indices (inside, outside); valid (B, P)."""
    inside = scores.gather(1, pairs[..., 0])
    outside = scores.gather(1, pairs[..., 1])
    hinge = (margin + outside - inside).clamp(min=0) * valid
    return PAIR_SCALE * hinge.sum() / pairs.shape[0] / pairs.shape[1]


def margin_ranking_all_pairs(scores, labels, mask, margin: float) -> torch.Tensor:
    """On every (inside, outside) pair of each query: the expectation of the sampled term."""
    positive = (labels > 0) & mask
    negative = (labels <= 0) & mask
    pairs = positive[:, :, None] & negative[:, None, :]  # (B, L_pos, L_neg)
    hinge = (margin + scores[:, None, :] - scores[:, :, None]).clamp(min=0)
    per_query = (hinge * pairs).sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1)
    has_pairs = pairs.flatten(1).any(1)
    if not bool(has_pairs.any()):
        return scores.sum() * 0.0
    return PAIR_SCALE * per_query[has_pairs].mean()


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
    labels: torch.Tensor,  # (B, L) 1 on the frames of the first GT window, else 0
    mask: torch.Tensor,  # (B, L) True on real frames
    margin: float,
    pairs: torch.Tensor,  # (B, P, 2) sampled (inside, outside) frames; P = 0: every pair
    pairs_valid: torch.Tensor,  # (B, P) False where a query has no outside frame
    scores_neg: torch.Tensor | None = None,  # (B, L) logits with a mismatched query
) -> torch.Tensor:
    mask = mask.bool()
    labels = labels.to(scores.dtype) * mask
    if pairs.shape[1]:
        loss = margin_ranking(scores, pairs, pairs_valid.bool(), margin)
    else:
        loss = margin_ranking_all_pairs(scores, labels, mask, margin)
    if scores_neg is None:
        return loss + rank_contrast(scores, labels, mask)
    both = torch.cat([scores, scores_neg], 1)
    loss = loss + rank_contrast(both, torch.cat([labels, torch.zeros_like(labels)], 1), torch.cat([mask, mask], 1))
    # -log(1 - sigmoid(s)) summed over the real frames, as in QD-DETR
    return loss + (F.softplus(scores_neg) * mask).sum(1).mean()
