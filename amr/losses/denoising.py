"""DN-DETR reconstruction loss, report §3.4: each denoising query rebuilds its source span.

One-to-one (no Hungarian assignment): query (m, w) of a sample is supervised by target w.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from amr.spans import cw_to_se, paired_generalized_iou

FOREGROUND = 0


def denoising_losses(dn_out: dict, spans: torch.Tensor) -> dict[str, torch.Tensor]:
    """dn_out: pred_logits / pred_spans (B, M*W, ·), valid (B, M*W), target_index (M*W,)."""
    valid = dn_out["valid"]
    targets = spans[:, dn_out["target_index"]][valid]  # (n, 2)
    pred = dn_out["pred_spans"][valid]
    logits = dn_out["pred_logits"][valid]
    if pred.shape[0] == 0:
        zero = dn_out["pred_spans"].sum() * 0.0
        return {"span": zero, "giou": zero, "label": zero}
    return {
        "span": F.l1_loss(pred, targets),
        "giou": (1 - paired_generalized_iou(cw_to_se(pred), cw_to_se(targets))).mean(),
        "label": F.cross_entropy(logits, torch.full_like(logits[:, 0], FOREGROUND, dtype=torch.long)),
    }
