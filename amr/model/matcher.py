"""DETR's Hungarian matcher for spans: which prediction answers which ground-truth window."""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from amr.config.schema import MatcherCosts
from amr.model.spans import cw_to_se, generalized_temporal_iou


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
