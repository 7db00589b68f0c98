"""Temporal span geometry: (c, w) <-> (s, e), IoU and generalized IoU (the matcher: amr.model.matcher).

Spans are normalised to [0, 1] over the T frames of a recording. ``cw`` means (centre, width),
``se`` means (start, end). All functions are batched over leading dimensions.
"""
from __future__ import annotations

import torch


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
