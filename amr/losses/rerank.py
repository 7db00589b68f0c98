"""Span-query re-ranking loss, report Eq. (3)."""
from __future__ import annotations

import torch

EPS = 1e-6


def rerank_loss(scores: torch.Tensor, indices: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """BCE of ½(⟨g_i, q⟩ + 1) (B, Q) against y_i = 1 for Hungarian-matched queries, else 0."""
    target = torch.zeros_like(scores)
    for b, (rows, _) in enumerate(indices):
        target[b, rows.to(scores.device)] = 1.0
    # written out: F.binary_cross_entropy refuses to run under CUDA autocast
    p = scores.float().clamp(EPS, 1 - EPS)
    return -(target * p.log() + (1 - target) * (1 - p).log()).mean()
