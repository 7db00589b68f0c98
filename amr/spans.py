"""Temporal span utilities: (c, w) <-> (s, e), IoU / generalized IoU, Hungarian matching.

Spans are normalised to [0, 1] over the T frames of a recording. ``cw`` means (centre, width),
``se`` means (start, end). All functions are batched over leading dimensions.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from amr.config import MatcherCosts


def cw_to_se(spans: torch.Tensor) -> torch.Tensor:
    c, w = spans.unbind(-1)
    return torch.stack([c - 0.5 * w, c + 0.5 * w], dim=-1)


def se_to_cw(spans: torch.Tensor) -> torch.Tensor:
    s, e = spans.unbind(-1)
    return torch.stack([0.5 * (s + e), e - s], dim=-1)


def _pairwise_inter_union(a: torch.Tensor, b: torch.Tensor):
    """a: (..., N, 2) se, b: (..., M, 2) se -> intersection, union, enclosing length (..., N, M)."""
    a_s, a_e = a[..., :, None, 0], a[..., :, None, 1]
    b_s, b_e = b[..., None, :, 0], b[..., None, :, 1]
    inter = (torch.minimum(a_e, b_e) - torch.maximum(a_s, b_s)).clamp(min=0)
    union = (a_e - a_s) + (b_e - b_s) - inter
    enclosing = torch.maximum(a_e, b_e) - torch.minimum(a_s, b_s)
    return inter, union, enclosing


def temporal_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pairwise IoU of (start, end) spans: (..., N, 2) x (..., M, 2) -> (..., N, M)."""
    inter, union, _ = _pairwise_inter_union(a, b)
    return inter / union.clamp(min=eps)


def generalized_temporal_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pairwise generalized IoU of (start, end) spans, in [-1, 1]."""
    inter, union, enclosing = _pairwise_inter_union(a, b)
    iou = inter / union.clamp(min=eps)
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def paired_generalized_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Element-wise generalized IoU of matched (start, end) spans: (..., 2) x (..., 2) -> (...)."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    enclosing = torch.maximum(a[..., 1], b[..., 1]) - torch.minimum(a[..., 0], b[..., 0])
    iou = inter / union.clamp(min=eps)
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


class HungarianMatcher:
    """One-to-one assignment of predicted spans to ground-truth spans, per sample.

    cost = span_l1 * L1(cw) - span_giou * gIoU(se) - label * p_fg, computed for the whole
    batch at once; padded targets (``target_mask`` False) never take part in the assignment.
    """

    def __init__(self, costs: MatcherCosts | None = None):
        self.costs = costs or MatcherCosts()

    @torch.no_grad()
    def __call__(
        self,
        pred_logits: torch.Tensor,  # (B, Q, 2): [foreground, background] logits
        pred_spans: torch.Tensor,  # (B, Q, 2) cw
        target_spans: torch.Tensor,  # (B, W, 2) cw, padded
        target_mask: torch.Tensor,  # (B, W) bool, True = real target
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        p_fg = pred_logits.float().softmax(-1)[..., 0]  # (B, Q)
        pred = pred_spans.float()
        tgt = target_spans.float()
        cost_l1 = torch.cdist(pred, tgt, p=1)  # (B, Q, W)
        cost_giou = -generalized_temporal_iou(cw_to_se(pred), cw_to_se(tgt))
        cost = (
            self.costs.span_l1 * cost_l1
            + self.costs.span_giou * cost_giou
            - self.costs.label * p_fg[..., None]
        )
        cost = cost.cpu().numpy()
        counts = target_mask.sum(-1).tolist()
        mask = target_mask.cpu().numpy()
        indices = []
        for b, n in enumerate(counts):
            if n == 0:
                empty = torch.zeros(0, dtype=torch.long)
                indices.append((empty, empty))
                continue
            cols = np.flatnonzero(mask[b])
            rows, picked = linear_sum_assignment(cost[b][:, cols])
            indices.append(
                (torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols[picked], dtype=torch.long))
            )
        return indices
