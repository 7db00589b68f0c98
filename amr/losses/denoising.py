"""DN-DETR reconstruction loss, report §3.4: each denoising query rebuilds its source span.

One-to-one (no Hungarian assignment): query (m, w) of a sample is supervised by target w.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from amr.model.spans import cw_to_se, paired_generalized_iou

FOREGROUND, BACKGROUND = 0, 1


def denoising_losses(dn_out: dict, spans: torch.Tensor, class_weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """dn_out: pred_logits / pred_spans (B, M*W, ·), valid (B, M*W), target_index (M*W,).

    L1 and gIoU on the queries made from real spans; the label loss on every slot, as the
    authors' code: real ones foreground, padding slots background, the class weights of the
    detector's label loss, weighted mean."""
    valid = dn_out["valid"]
    targets = spans[:, dn_out["target_index"]][valid]  # (n, 2)
    pred = dn_out["pred_spans"][valid]
    labels = torch.where(valid, FOREGROUND, BACKGROUND)
    label = F.cross_entropy(dn_out["pred_logits"].transpose(1, 2), labels, class_weight)
    if pred.shape[0] == 0:
        zero = dn_out["pred_spans"].sum() * 0.0
        return {"span": zero, "giou": zero, "label": label}
    return {
        "span": F.l1_loss(pred, targets),
        "giou": (1 - paired_generalized_iou(cw_to_se(pred), cw_to_se(targets))).mean(),
        "label": label,
    }
